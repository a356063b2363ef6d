// Command k8s-harness is the Go test tooling of the ferrolb lab: it runs an
// upstream Kubernetes control plane (k8s.io/kubernetes), upstream kube-proxy,
// and a small node agent that stands in for the kubelet's container runtime,
// all inside network namespaces that the Rust lab creates.
//
// Every subcommand logs to stderr and exits cleanly on SIGTERM/SIGINT.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/spf13/pflag"
	"k8s.io/klog/v2"
)

type subcommand struct {
	name  string
	usage string
	run   func(ctx context.Context, args []string) error
}

var subcommands = []subcommand{
	{"control-plane", "etcd + kube-apiserver + kube-controller-manager + kube-scheduler in one process", runControlPlane},
	{"forward", "root-netns TCP listener piped to the control plane's unix socket", runForward},
	{"kube-proxy", "upstream kube-proxy for one node", runKubeProxy},
	{"node-agent", "kubelet stand-in: registers the node, runs pods as netns + echo processes", runNodeAgent},
	{"echo", "HTTP server answering with the pod name or the client address", runEcho},
	{"delay", "holds the packets routed into a TUN device for a fixed time, then sends them on", runDelay},
	// kubectl is dispatched before this table (it owns its own flags); listed for usage.
	{"kubectl", "upstream kubectl of the lab's Kubernetes version (also via the kubectl symlink)", nil},
}

func usage() {
	fmt.Fprintf(os.Stderr, "usage: k8s-harness <subcommand> [flags]\n\nsubcommands:\n")
	for _, c := range subcommands {
		fmt.Fprintf(os.Stderr, "  %-14s %s\n", c.name, c.usage)
	}
}

func main() {
	// Invoked through the `kubectl` symlink that build.sh makes, or as
	// `k8s-harness kubectl ...`.
	if filepath.Base(os.Args[0]) == "kubectl" {
		runKubectl(os.Args[1:])
	}
	if len(os.Args) >= 2 && os.Args[1] == "kubectl" {
		runKubectl(os.Args[2:])
	}
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	name := os.Args[1]
	for _, c := range subcommands {
		if c.name != name {
			continue
		}
		// One signal context for the whole process: the upstream components
		// are driven through their options packages precisely so that none of
		// them installs its own (second) signal handler.
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
		err := c.run(ctx, os.Args[2:])
		stop()
		klog.Flush()
		if errors.Is(err, pflag.ErrHelp) {
			os.Exit(0) // usage was printed by the flag set
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "k8s-harness %s: %v\n", name, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if name == "-h" || name == "--help" || name == "help" {
		usage()
		os.Exit(0)
	}
	fmt.Fprintf(os.Stderr, "k8s-harness: unknown subcommand %q\n", name)
	usage()
	os.Exit(2)
}

// newFlagSet returns a flag set that fails on unknown flags and prints usage
// on -h; parse errors are returned, not os.Exit'ed, so tests can use it too.
func newFlagSet(name string) *pflag.FlagSet {
	fs := pflag.NewFlagSet("k8s-harness "+name, pflag.ContinueOnError)
	fs.SortFlags = false
	return fs
}
