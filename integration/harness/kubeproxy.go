package main

// kube-proxy: upstream kube-proxy (k8s.io/kubernetes/cmd/kube-proxy/app),
// one process per node, run inside the node's netns. We translate the lab's
// flags into upstream flags and run the upstream cobra command; it is the
// only component in this process, so its own setup (logging, flags) is
// exactly that of the standalone binary.

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"k8s.io/klog/v2"
	proxyapp "k8s.io/kubernetes/cmd/kube-proxy/app"
)

func runKubeProxy(ctx context.Context, args []string) error {
	fs := newFlagSet("kube-proxy")
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig (STATE/cp/kubeconfig)")
	hostname := fs.String("hostname-override", "", "node name")
	nodeIP := fs.String("node-ip", "", "node address(es), comma separated; the first is the primary")
	clusterCIDR := fs.String("cluster-cidr", "198.18.0.0/16", "pod range(s), comma separated")
	mode := fs.String("mode", "iptables", "iptables or nftables")
	verbosity := fs.Int("v", 0, "klog verbosity")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *kubeconfig == "" || *hostname == "" || *nodeIP == "" {
		return errors.New("--kubeconfig, --hostname-override and --node-ip are required")
	}
	if *mode != "iptables" && *mode != "nftables" {
		return fmt.Errorf("--mode must be iptables or nftables, not %q", *mode)
	}
	primary := strings.Split(*nodeIP, ",")[0]
	upstream := []string{
		"--kubeconfig=" + *kubeconfig,
		"--hostname-override=" + *hostname,
		// kube-proxy's historical name for "this node's primary IP"; the
		// other family's address comes from the Node object.
		"--bind-address=" + primary,
		"--cluster-cidr=" + *clusterCIDR,
		"--proxy-mode=" + *mode,
		// Conntrack sysctls are partly global (hashsize, nf_conntrack_max in
		// init_net): not ours to change. 0 means "leave as-is".
		"--conntrack-max-per-core=0",
		"--conntrack-tcp-timeout-established=0",
		"--conntrack-tcp-timeout-close-wait=0",
		"--healthz-bind-address=127.0.0.1:10256",
		"--metrics-bind-address=127.0.0.1:10249",
		fmt.Sprintf("--v=%d", *verbosity),
	}
	cmd := proxyapp.NewProxyCommand()
	cmd.SetArgs(upstream)
	errCh := make(chan error, 1)
	// Upstream kube-proxy runs until the process ends (it has no stop
	// hook); we end it on SIGTERM/SIGINT by returning from here, which
	// leaves its rules in place exactly like a stopped kube-proxy would.
	go func() { errCh <- cmd.ExecuteContext(ctx) }()
	select {
	case err := <-errCh:
		if ctx.Err() != nil {
			return nil
		}
		if err == nil {
			err = errors.New("kube-proxy exited")
		}
		return err
	case <-ctx.Done():
		klog.Info("kube-proxy stopping on signal")
		return nil
	}
}
