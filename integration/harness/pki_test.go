package main

import (
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"testing"

	"k8s.io/client-go/tools/clientcmd"
)

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(data)
	if b == nil {
		t.Fatalf("%s: no PEM", path)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestEnsurePKI(t *testing.T) {
	p := pkiFiles{Dir: filepath.Join(t.TempDir(), "pki")}
	dns, ips := servingSANs(net.ParseIP("192.0.2.10"), nil)
	if err := ensurePKI(p, dns, ips); err != nil {
		t.Fatal(err)
	}
	ca := readCert(t, p.CACert())
	pool := x509.NewCertPool()
	pool.AddCert(ca)

	serving := readCert(t, p.ServingCert())
	for _, host := range []string{"192.0.2.10", "127.0.0.1", "::1", "2001:db8:2::10", "198.19.0.1",
		"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"} {
		if _, err := serving.Verify(x509.VerifyOptions{DNSName: host, Roots: pool}); err != nil {
			t.Errorf("serving cert does not verify for %s: %v", host, err)
		}
	}

	admin := readCert(t, p.AdminCert())
	if _, err := admin.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("admin cert: %v", err)
	}
	if len(admin.Subject.Organization) != 1 || admin.Subject.Organization[0] != "system:masters" {
		t.Errorf("admin O = %v, want system:masters", admin.Subject.Organization)
	}
	for _, f := range []string{p.SAKey(), p.SAPub(), p.CAKey(), p.ServingKey(), p.AdminKey()} {
		if !exists(f) {
			t.Errorf("%s missing", f)
		}
	}

	// A second run must reuse everything (restart keeps the cluster).
	before, _ := os.ReadFile(p.CACert())
	saBefore, _ := os.ReadFile(p.SAKey())
	if err := ensurePKI(p, dns, ips); err != nil {
		t.Fatal(err)
	}
	after, _ := os.ReadFile(p.CACert())
	saAfter, _ := os.ReadFile(p.SAKey())
	if string(before) != string(after) || string(saBefore) != string(saAfter) {
		t.Error("ensurePKI regenerated existing files")
	}
}

func TestKubeconfigRewrite(t *testing.T) {
	dir := t.TempDir()
	p := pkiFiles{Dir: filepath.Join(dir, "pki")}
	dns, ips := servingSANs(net.ParseIP("192.0.2.10"), nil)
	if err := ensurePKI(p, dns, ips); err != nil {
		t.Fatal(err)
	}
	in := filepath.Join(dir, "kubeconfig")
	out := filepath.Join(dir, "kubeconfig.root")
	if err := writeKubeconfig(in, "https://192.0.2.10:6443", p); err != nil {
		t.Fatal(err)
	}
	if err := rewriteKubeconfigServer(in, out, "https://127.0.0.1:4321"); err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", out)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Host != "https://127.0.0.1:4321" {
		t.Errorf("host = %s", cfg.Host)
	}
	if len(cfg.CAData) == 0 || len(cfg.CertData) == 0 || len(cfg.KeyData) == 0 {
		t.Error("rewritten kubeconfig lost embedded credentials")
	}
}
