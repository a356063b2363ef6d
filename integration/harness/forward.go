package main

// forward: runs in the ROOT netns and gives kubectl there a TCP endpoint on
// loopback. Each TCP connection is piped to the control plane's unix socket
// (STATE/cp/apiserver.sock), which the control plane pipes on to the
// apiserver inside flb-m-k8s. TLS is end to end: the apiserver certificate
// has 127.0.0.1 among its SANs.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"k8s.io/klog/v2"
)

func runForward(ctx context.Context, args []string) error {
	fs := newFlagSet("forward")
	unixPath := fs.String("unix", "", "control plane unix socket (STATE/cp/apiserver.sock)")
	listen := fs.String("listen", "127.0.0.1:0", "TCP listen address in the root netns")
	portFile := fs.String("port-file", "", "file to write the listening port to")
	kcIn := fs.String("kubeconfig-in", "", "kubeconfig written by the control plane")
	kcOut := fs.String("kubeconfig-out", "", "kubeconfig to write, with server https://127.0.0.1:<port>")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *unixPath == "" {
		return errors.New("--unix is required")
	}
	if *portFile != "" {
		os.Remove(*portFile)
	}

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	klog.InfoS("forwarding", "listen", ln.Addr().String(), "unix", *unixPath)

	if *kcOut != "" {
		if *kcIn == "" {
			return errors.New("--kubeconfig-out needs --kubeconfig-in")
		}
		// The control plane may still be starting: wait for its kubeconfig.
		if err := waitForFile(ctx, *kcIn, 5*time.Minute); err != nil {
			return err
		}
		server := "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if err := rewriteKubeconfigServer(*kcIn, *kcOut, server); err != nil {
			return fmt.Errorf("writing %s: %w", *kcOut, err)
		}
	}
	// The port file comes last: whoever waits for it can use the kubeconfig.
	if *portFile != "" {
		if err := writeFileAtomic(*portFile, []byte(strconv.Itoa(port)+"\n"), 0o644); err != nil {
			return err
		}
	}

	go func() { <-ctx.Done(); ln.Close() }()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				klog.Info("forward stopped")
				return nil
			}
			return err
		}
		go func() {
			up, err := net.DialTimeout("unix", *unixPath, 5*time.Second)
			if err != nil {
				klog.ErrorS(err, "dial control plane socket", "unix", *unixPath)
				conn.Close()
				return
			}
			pipe(conn, up)
		}()
	}
}

func waitForFile(ctx context.Context, path string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for !exists(path) {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not appear within %s", path, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return nil
}
