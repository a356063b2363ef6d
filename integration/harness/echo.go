package main

// echo: the stand-in for container images. In "hostname" mode it answers
// every request with the pod name (like sysnet4admin/echo-hname), in "ip"
// mode with the client's IP address (like echo-ip images), one line each.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"k8s.io/klog/v2"
)

// echoHandler answers with name (mode hostname) or the client IP (mode ip).
func echoHandler(mode, name string) (http.Handler, error) {
	switch mode {
	case "hostname":
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			fmt.Fprintf(w, "%s\n", name)
		}), nil
	case "ip":
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			host, _, err := net.SplitHostPort(r.RemoteAddr)
			if err != nil {
				host = r.RemoteAddr
			}
			w.Header().Set("Content-Type", "text/plain")
			fmt.Fprintf(w, "%s\n", host)
		}), nil
	}
	return nil, fmt.Errorf("unknown mode %q (hostname|ip)", mode)
}

// echoModeForImage maps a container image to the echo mode.
func echoModeForImage(image string) string {
	if strings.Contains(image, "echo-ip") {
		return "ip"
	}
	return "hostname"
}

func runEcho(ctx context.Context, args []string) error {
	fs := newFlagSet("echo")
	name := fs.String("name", "", "pod name to answer with (mode hostname)")
	mode := fs.String("mode", "hostname", "hostname|ip")
	listen := fs.String("listen", ":80", "listen addresses, comma separated")
	if err := fs.Parse(args); err != nil {
		return err
	}
	h, err := echoHandler(*mode, *name)
	if err != nil {
		return err
	}
	var servers []*http.Server
	errCh := make(chan error, 8)
	for _, addr := range strings.Split(*listen, ",") {
		addr = strings.TrimSpace(addr)
		if addr == "" {
			continue
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return err
		}
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
		servers = append(servers, srv)
		go func() { errCh <- srv.Serve(ln) }()
	}
	if len(servers) == 0 {
		return errors.New("no --listen address")
	}
	klog.InfoS("echo serving", "name", *name, "mode", *mode, "listen", *listen)
	select {
	case <-ctx.Done():
	case err := <-errCh:
		return err
	}
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, s := range servers {
		s.Shutdown(sctx)
	}
	return nil
}
