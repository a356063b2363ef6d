package main

// Pod networking for the node agent, done with iproute2 so that every step
// is the same command a person would type to debug it.
//
// Layout (routed, no bridge): each pod gets a netns "<node-netns>-p<short>"
// and a veth pair: "veth<short>" stays in the node netns, "eth0" goes into the
// pod. The pod address is a /32 (/128) on eth0; the pod's default route goes
// via the first address of the node's pod CIDR, which is never assigned to
// anything: a permanent neighbour entry maps it to the MAC of vp<short>, so
// every packet a pod sends goes to the node netns and through its routing
// and netfilter (kube-proxy's DNAT, masquerade) - same-node pod-to-pod and
// pod-to-ClusterIP included. The node routes the pod address to vp<short>.
// Other nodes reach the pod CIDR via the routes the lab installs.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// runCmd runs a command and folds its output into the error.
func runCmd(name string, args ...string) error {
	var out bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}

// hostMountNS is the mount namespace in which named netns are created and
// deleted: the lab's. The node agent usually runs under "ip netns exec",
// which puts it in a private mount namespace whose mounts are slaves of the
// lab's: a netns mount made there would be invisible to "ip netns list" in
// the lab's namespace, so "lab down" could not find it, while mounts made in
// the lab's namespace do propagate to ours.
// nil means "our own" (we were started without a mount namespace change).
var hostMountNS *os.File

// runNetnsPeer returns the propagation tag ("shared:N" or "master:N") of
// the /run/netns mount in a mountinfo file, "" if there is none.
func runNetnsPeer(mountinfo string) string {
	data, err := os.ReadFile(mountinfo)
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 7 || f[4] != "/run/netns" {
			continue
		}
		for _, opt := range f[6:] {
			if opt == "-" {
				break
			}
			if strings.HasPrefix(opt, "shared:") || strings.HasPrefix(opt, "master:") {
				return opt
			}
		}
	}
	return ""
}

// captureHostMountNS finds the mount namespace that holds the master copy
// of our /run/netns mount: if ours is "master:N", it is the namespace of a
// process (the parent first, else any we may inspect) whose /run/netns is
// "shared:N". The namespace fd is kept open for the agent's lifetime, so
// it stays valid even if that process exits.
func captureHostMountNS() error {
	peer := runNetnsPeer("/proc/self/mountinfo")
	if !strings.HasPrefix(peer, "master:") {
		return nil // our /run/netns is the shared original (or absent)
	}
	want := "shared:" + strings.TrimPrefix(peer, "master:")
	ours, _ := os.Readlink("/proc/self/ns/mnt")
	pids := []string{strconv.Itoa(os.Getppid())}
	if entries, err := os.ReadDir("/proc"); err == nil {
		for _, e := range entries {
			if _, err := strconv.Atoi(e.Name()); err == nil {
				pids = append(pids, e.Name())
			}
		}
	}
	seen := map[string]bool{ours: true}
	for _, pid := range pids {
		ns, err := os.Readlink("/proc/" + pid + "/ns/mnt")
		if err != nil || seen[ns] {
			continue
		}
		seen[ns] = true
		if runNetnsPeer("/proc/"+pid+"/mountinfo") != want {
			continue
		}
		f, err := os.Open("/proc/" + pid + "/ns/mnt")
		if err != nil {
			continue
		}
		hostMountNS = f
		return nil
	}
	return fmt.Errorf("no process found whose mount namespace holds /run/netns as %s; "+
		"cannot create pod netns visible to the lab", want)
}

// hostCmd runs "ip netns ..." in the host mount namespace (via nsenter and
// the inherited namespace fd, which becomes fd 3 in the child).
func hostCmd(args ...string) *exec.Cmd {
	if hostMountNS == nil {
		return exec.Command(args[0], args[1:]...)
	}
	cmd := exec.Command("nsenter", append([]string{"--mount=/proc/self/fd/3", "--"}, args...)...)
	cmd.ExtraFiles = []*os.File{hostMountNS}
	return cmd
}

func runHostCmd(args ...string) error {
	out, err := hostCmd(args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func netnsAdd(name string) error { return runHostCmd("ip", "netns", "add", name) }
func netnsDel(name string) error { return runHostCmd("ip", "netns", "del", name) }

// netnsList lists named netns as seen from the host mount namespace.
func netnsList() ([]string, error) {
	out, err := hostCmd("ip", "netns", "list").Output()
	if err != nil {
		return nil, err
	}
	var names []string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			names = append(names, f[0])
		}
	}
	return names, nil
}

// gatewayFor is the pod CIDR's first host address, used by pods as a
// next-hop label only.
func gatewayFor(cidr *net.IPNet) net.IP {
	return addToIP(cidr.IP.Mask(cidr.Mask), 1)
}

func addToIP(ip net.IP, n int64) net.IP {
	if v4 := ip.To4(); v4 != nil {
		return net.IP(binary.BigEndian.AppendUint32(nil, binary.BigEndian.Uint32(v4)+uint32(n))).To4()
	}
	i := new(big.Int).SetBytes(ip.To16())
	i.Add(i, big.NewInt(n))
	b := i.Bytes()
	out := make(net.IP, 16)
	copy(out[16-len(b):], b)
	return out
}

// allocateIP returns the lowest address of cidr that is neither the network
// address, the gateway, the IPv4 broadcast address nor in used (keys are
// IP strings).
func allocateIP(cidr *net.IPNet, used map[string]bool) (net.IP, error) {
	base := cidr.IP.Mask(cidr.Mask)
	ones, bits := cidr.Mask.Size()
	size := int64(1) << 20 // plenty for a lab node; bounds the IPv6 walk
	if bits-ones < 20 {
		size = int64(1) << (bits - ones)
	}
	last := size - 1
	if base.To4() != nil {
		last = size - 2 // broadcast
	}
	for off := int64(2); off <= last; off++ {
		ip := addToIP(base, off)
		if !used[ip.String()] {
			return ip, nil
		}
	}
	return nil, fmt.Errorf("pod CIDR %s is exhausted", cidr)
}

// podNet describes one pod's network plumbing.
type podNet struct {
	Netns string   // pod netns name
	Veth  string   // node-side veth name
	IPs   []net.IP // one per family
	GWs   []net.IP // gateway label per family, same order as IPs
}

// setup creates the netns, the veth pair, addresses and routes. It is
// called from inside the node netns. Partial state is removed on failure.
func (p podNet) setup() (err error) {
	if err := netnsAdd(p.Netns); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			p.teardown()
		}
	}()
	// A veth left over from a crash (pod netns gone, peer destroyed) would
	// block the name; ignore "does not exist".
	_ = runCmd("ip", "link", "del", p.Veth)
	if err := runCmd("ip", "link", "add", p.Veth, "type", "veth", "peer", "name", "eth0", "netns", p.Netns); err != nil {
		return err
	}
	if err := runCmd("ip", "link", "set", p.Veth, "up"); err != nil {
		return err
	}
	ifc, err := net.InterfaceByName(p.Veth)
	if err != nil {
		return err
	}
	mac := ifc.HardwareAddr.String()
	ns := []string{"-n", p.Netns}
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"link", "set", "eth0", "up"},
	} {
		if err := runCmd("ip", append(ns, args...)...); err != nil {
			return err
		}
	}
	for i, ip := range p.IPs {
		gw := p.GWs[i]
		fam, plen := "-4", "/32"
		if ip.To4() == nil {
			fam, plen = "-6", "/128"
		}
		addr := []string{fam, "addr", "add", ip.String() + plen, "dev", "eth0"}
		if fam == "-6" {
			// Nothing else can hold this address; skip DAD so the pod is
			// reachable at once.
			addr = append(addr, "nodad")
		}
		for _, args := range [][]string{
			addr,
			{fam, "route", "add", gw.String(), "dev", "eth0", "scope", "link"},
			{fam, "neigh", "replace", gw.String(), "lladdr", mac, "dev", "eth0", "nud", "permanent"},
			{fam, "route", "add", "default", "via", gw.String(), "dev", "eth0"},
		} {
			if err := runCmd("ip", append(ns, args...)...); err != nil {
				return err
			}
		}
		if err := runCmd("ip", fam, "route", "replace", ip.String()+plen, "dev", p.Veth); err != nil {
			return err
		}
	}
	return nil
}

// teardown removes the pod netns (which destroys eth0 and with it the veth
// pair and the node's route to the pod). Missing pieces are not errors.
func (p podNet) teardown() error {
	var errs []error
	if err := netnsDel(p.Netns); err != nil && !strings.Contains(err.Error(), "No such file") {
		errs = append(errs, err)
	}
	if _, err := net.InterfaceByName(p.Veth); err == nil {
		if err := runCmd("ip", "link", "del", p.Veth); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
