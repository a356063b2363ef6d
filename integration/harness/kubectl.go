package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubectl/pkg/cmd"
	cmdutil "k8s.io/kubectl/pkg/cmd/util"
)

// runKubectl runs upstream kubectl built from the same Kubernetes version as
// the lab's API server, so tests and `make demo` never depend on whatever
// kubectl (if any) a machine has installed. The process is kubectl from here
// on: it reads its arguments from os.Args like the real binary.
func runKubectl(args []string) {
	os.Args = append([]string{"kubectl"}, args...)
	command := cmd.NewDefaultKubectlCommand()
	if err := cli.RunNoErrOutput(command); err != nil {
		cmdutil.CheckErr(err)
	}
	os.Exit(0)
}
