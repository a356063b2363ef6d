package main

// PKI for the lab control plane: one CA, the apiserver serving certificate,
// the service-account key pair and an admin client certificate. Everything
// is generated once into the data dir and reused afterwards, so a restarted
// control plane keeps talking to clients that hold the old kubeconfig.

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// pkiFiles names the files of the control-plane PKI inside one directory.
type pkiFiles struct {
	Dir string
}

func (p pkiFiles) path(name string) string  { return filepath.Join(p.Dir, name) }
func (p pkiFiles) CACert() string           { return p.path("ca.crt") }
func (p pkiFiles) CAKey() string            { return p.path("ca.key") }
func (p pkiFiles) ServingCert() string      { return p.path("apiserver.crt") }
func (p pkiFiles) ServingKey() string       { return p.path("apiserver.key") }
func (p pkiFiles) SAKey() string            { return p.path("sa.key") }
func (p pkiFiles) SAPub() string            { return p.path("sa.pub") }
func (p pkiFiles) AdminCert() string        { return p.path("admin.crt") }
func (p pkiFiles) AdminKey() string         { return p.path("admin.key") }
func (p pkiFiles) FrontProxyCACert() string { return p.path("front-proxy-ca.crt") }
func (p pkiFiles) FrontProxyCAKey() string  { return p.path("front-proxy-ca.key") }
func (p pkiFiles) FrontProxyCert() string   { return p.path("front-proxy-client.crt") }
func (p pkiFiles) FrontProxyKey() string    { return p.path("front-proxy-client.key") }

// servingSANs are the names and addresses the apiserver certificate covers:
// the lab node address (v4 and v6), loopback (the root-netns forwarder
// reaches it as 127.0.0.1) and the in-cluster service names and ClusterIP.
func servingSANs(advertise net.IP, extraIPs []net.IP) ([]string, []net.IP) {
	dns := []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
		"kubernetes.default.svc.cluster.local"}
	ips := []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1"), net.ParseIP("192.0.2.10"),
		net.ParseIP("2001:db8:2::10"), net.ParseIP("198.19.0.1")}
	for _, ip := range append([]net.IP{advertise}, extraIPs...) {
		if ip == nil {
			continue
		}
		dup := false
		for _, have := range ips {
			if have.Equal(ip) {
				dup = true
			}
		}
		if !dup {
			ips = append(ips, ip)
		}
	}
	return dns, ips
}

// ensurePKI creates whatever part of the PKI is missing in p.Dir. Existing
// files are left alone (restart keeps the cluster's identity).
func ensurePKI(p pkiFiles, dnsNames []string, ips []net.IP) error {
	if err := os.MkdirAll(p.Dir, 0o700); err != nil {
		return err
	}
	caCert, caKey, err := loadOrCreateCA(p.CACert(), p.CAKey(), "ferrolb-lab-ca")
	if err != nil {
		return fmt.Errorf("CA: %w", err)
	}
	// Front-proxy (request-header) CA and client: the aggregator's identity
	// towards extension apiservers, and the CA that delegated authentication
	// (controller-manager, scheduler) expects to find in
	// kube-system/extension-apiserver-authentication.
	fpCert, fpKey, err := loadOrCreateCA(p.FrontProxyCACert(), p.FrontProxyCAKey(), "ferrolb-lab-front-proxy-ca")
	if err != nil {
		return fmt.Errorf("front-proxy CA: %w", err)
	}
	if !exists(p.FrontProxyCert()) || !exists(p.FrontProxyKey()) {
		if err := issue(fpCert, fpKey, p.FrontProxyCert(), p.FrontProxyKey(), pkix.Name{CommonName: "front-proxy-client"},
			nil, nil, x509.ExtKeyUsageClientAuth); err != nil {
			return fmt.Errorf("front-proxy client cert: %w", err)
		}
	}
	if !exists(p.ServingCert()) || !exists(p.ServingKey()) {
		if err := issue(caCert, caKey, p.ServingCert(), p.ServingKey(), pkix.Name{CommonName: "kube-apiserver"},
			dnsNames, ips, x509.ExtKeyUsageServerAuth); err != nil {
			return fmt.Errorf("serving cert: %w", err)
		}
	}
	if !exists(p.AdminCert()) || !exists(p.AdminKey()) {
		// O=system:masters: the admin identity used by the lab, the node
		// agents, kube-proxy and ferrolb; RBAC grants it everything.
		if err := issue(caCert, caKey, p.AdminCert(), p.AdminKey(),
			pkix.Name{CommonName: "ferrolb-lab-admin", Organization: []string{"system:masters"}},
			nil, nil, x509.ExtKeyUsageClientAuth); err != nil {
			return fmt.Errorf("admin cert: %w", err)
		}
	}
	if !exists(p.SAKey()) || !exists(p.SAPub()) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		if err := writeKey(p.SAKey(), key); err != nil {
			return err
		}
		der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
		if err != nil {
			return err
		}
		if err := writePEM(p.SAPub(), "PUBLIC KEY", der, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func loadOrCreateCA(certPath, keyPath, cn string) (*x509.Certificate, crypto.Signer, error) {
	if exists(certPath) && exists(keyPath) {
		return loadCertAndKey(certPath, keyPath)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	if err := writeKey(keyPath, key); err != nil {
		return nil, nil, err
	}
	if err := writePEM(certPath, "CERTIFICATE", der, 0o644); err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return cert, key, err
}

func issue(ca *x509.Certificate, caKey crypto.Signer, certPath, keyPath string, subject pkix.Name,
	dnsNames []string, ips []net.IP, usage x509.ExtKeyUsage) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      subject,
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(5 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		DNSNames:     dnsNames,
		IPAddresses:  ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return err
	}
	if err := writeKey(keyPath, key); err != nil {
		return err
	}
	return writePEM(certPath, "CERTIFICATE", der, 0o644)
}

func randomSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		panic(err)
	}
	return n
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	return writePEM(path, "EC PRIVATE KEY", der, 0o600)
}

// writePEM writes atomically (temp file + rename) so a crash never leaves a
// half-written key that a later run would try to reuse.
func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	return writeFileAtomic(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode)
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func loadCertAndKey(certPath, keyPath string) (*x509.Certificate, crypto.Signer, error) {
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, nil, err
	}
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, nil, errors.New("bad PEM in " + certPath + " or " + keyPath)
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, nil, err
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return nil, nil, err
	}
	return cert, key, nil
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// writeKubeconfig writes an admin kubeconfig for server with the PKI's CA
// and admin client certificate embedded, so the file is self-contained and
// can be copied (the forwarder rewrites only the server URL).
func writeKubeconfig(path, server string, p pkiFiles) error {
	ca, err := os.ReadFile(p.CACert())
	if err != nil {
		return err
	}
	cert, err := os.ReadFile(p.AdminCert())
	if err != nil {
		return err
	}
	key, err := os.ReadFile(p.AdminKey())
	if err != nil {
		return err
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["ferrolb-lab"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca}
	cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: cert, ClientKeyData: key}
	cfg.Contexts["ferrolb-lab"] = &clientcmdapi.Context{Cluster: "ferrolb-lab", AuthInfo: "admin"}
	cfg.CurrentContext = "ferrolb-lab"
	data, err := clientcmd.Write(*cfg)
	if err != nil {
		return err
	}
	return writeFileAtomic(path, data, 0o600)
}

// rewriteKubeconfigServer copies in to out with every cluster's server
// replaced by server.
func rewriteKubeconfigServer(in, out, server string) error {
	cfg, err := clientcmd.LoadFromFile(in)
	if err != nil {
		return err
	}
	for _, c := range cfg.Clusters {
		c.Server = server
	}
	data, err := clientcmd.Write(*cfg)
	if err != nil {
		return err
	}
	return writeFileAtomic(out, data, 0o600)
}
