package main

import (
	"bufio"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"
)

// TestForward runs the forward subcommand against a unix-socket echo
// server standing in for the control plane's apiserver.sock.
func TestForward(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "apiserver.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				line, _ := bufio.NewReader(c).ReadString('\n')
				c.Write([]byte("echo:" + line))
			}()
		}
	}()

	p := pkiFiles{Dir: filepath.Join(dir, "pki")}
	dns, ips := servingSANs(net.ParseIP("192.0.2.10"), nil)
	if err := ensurePKI(p, dns, ips); err != nil {
		t.Fatal(err)
	}
	kcIn := filepath.Join(dir, "kubeconfig")
	if err := writeKubeconfig(kcIn, "https://192.0.2.10:6443", p); err != nil {
		t.Fatal(err)
	}
	kcOut := filepath.Join(dir, "kubeconfig.root")
	portFile := filepath.Join(dir, "forward.port")

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- runForward(ctx, []string{"--unix", sock, "--listen", "127.0.0.1:0", "--port-file", portFile,
			"--kubeconfig-in", kcIn, "--kubeconfig-out", kcOut})
	}()
	if err := waitForFile(ctx, portFile, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	port, _ := os.ReadFile(portFile)
	addr := "127.0.0.1:" + strings.TrimSpace(string(port))

	cfg, err := clientcmd.BuildConfigFromFlags("", kcOut)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Host != "https://"+addr {
		t.Errorf("kubeconfig-out server = %s, want https://%s", cfg.Host, addr)
	}

	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("hello\n"))
	got, _ := bufio.NewReader(c).ReadString('\n')
	c.Close()
	if got != "echo:hello\n" {
		t.Errorf("got %q through the forward", got)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("forward returned %v on cancel", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("forward did not stop on cancel")
	}
}
