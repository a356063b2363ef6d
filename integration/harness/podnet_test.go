package main

import (
	"net"
	"os"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func mustCIDR(t *testing.T, s string) *net.IPNet {
	t.Helper()
	_, c, err := net.ParseCIDR(s)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestAllocateIPv4(t *testing.T) {
	cidr := mustCIDR(t, "198.18.1.0/24")
	if gw := gatewayFor(cidr).String(); gw != "198.18.1.1" {
		t.Fatalf("gateway %s", gw)
	}
	used := map[string]bool{}
	ip, err := allocateIP(cidr, used)
	if err != nil || ip.String() != "198.18.1.2" {
		t.Fatalf("first = %v, %v", ip, err)
	}
	used["198.18.1.2"] = true
	used["198.18.1.4"] = true
	if ip, _ := allocateIP(cidr, used); ip.String() != "198.18.1.3" {
		t.Fatalf("lowest free = %v", ip)
	}
	// Fill the range: .2 .. .254 usable (253 addresses), no .255, no .0/.1.
	used = map[string]bool{}
	for i := 0; i < 253; i++ {
		ip, err := allocateIP(cidr, used)
		if err != nil {
			t.Fatalf("alloc %d: %v", i, err)
		}
		if s := ip.String(); s == "198.18.1.255" || s == "198.18.1.0" || s == "198.18.1.1" {
			t.Fatalf("allocated reserved %s", s)
		}
		used[ip.String()] = true
	}
	if _, err := allocateIP(cidr, used); err == nil {
		t.Fatal("exhausted CIDR still allocates")
	}
}

func TestAllocateIPv6(t *testing.T) {
	cidr := mustCIDR(t, "2001:db8:18:1::/64")
	if gw := gatewayFor(cidr).String(); gw != "2001:db8:18:1::1" {
		t.Fatalf("gateway %s", gw)
	}
	used := map[string]bool{"2001:db8:18:1::2": true}
	ip, err := allocateIP(cidr, used)
	if err != nil || ip.String() != "2001:db8:18:1::3" {
		t.Fatalf("got %v, %v", ip, err)
	}
}

func TestAssignIPsKeepsReservation(t *testing.T) {
	a := &nodeAgent{
		podCIDRs: []*net.IPNet{mustCIDR(t, "198.18.2.0/24"), mustCIDR(t, "2001:db8:18:2::/64")},
		pods:     map[string]*podRuntime{},
	}
	a.pods["default/other"] = &podRuntime{rec: podRecord{UID: "u1", IPs: []string{"198.18.2.2", "2001:db8:18:2::2"}}}
	// A pod restored from a previous run keeps its addresses.
	rec := podRecord{UID: "u2", IPs: []string{"198.18.2.9", "2001:db8:18:2::9"}}
	if err := a.assignIPs(&rec); err != nil {
		t.Fatal(err)
	}
	if rec.IPs[0] != "198.18.2.9" || rec.IPs[1] != "2001:db8:18:2::9" {
		t.Fatalf("reservation lost: %v", rec.IPs)
	}
	// A new pod gets the lowest free addresses, never another pod's.
	fresh := podRecord{UID: "u3"}
	if err := a.assignIPs(&fresh); err != nil {
		t.Fatal(err)
	}
	if fresh.IPs[0] != "198.18.2.3" || fresh.IPs[1] != "2001:db8:18:2::3" {
		t.Fatalf("fresh: %v", fresh.IPs)
	}
	// A stale reservation that collides with another pod is replaced.
	clash := podRecord{UID: "u4", IPs: []string{"198.18.2.2"}}
	if err := a.assignIPs(&clash); err != nil {
		t.Fatal(err)
	}
	if clash.IPs[0] == "198.18.2.2" {
		t.Fatal("handed out an address in use")
	}
}

func TestListenPlanAndShortID(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{UID: "1a2b3c4d-5e6f-7081-92a3-b4c5d6e7f809"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{
			{Name: "a", Ports: []corev1.ContainerPort{{ContainerPort: 80}, {ContainerPort: 8080}}},
			{Name: "b", Ports: []corev1.ContainerPort{{ContainerPort: 9090}, {ContainerPort: 53, Protocol: corev1.ProtocolUDP}}},
		}},
	}
	plan := listenPlan(pod)
	if got := plan["a"]; len(got) != 2 || got[0] != ":80" || got[1] != ":8080" {
		t.Errorf("a: %v", got)
	}
	if got := plan["b"]; len(got) != 1 || got[0] != ":9090" {
		t.Errorf("b: %v", got)
	}
	if s := shortID(pod.UID); s != "1a2b3c4d" {
		t.Errorf("shortID %s", s)
	}
	if n := len(vethName(shortID(pod.UID))); n > 15 {
		t.Errorf("veth name too long: %d", n)
	}
}

func TestRunNetnsPeer(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := dir + "/" + name
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	root := write("root", "42 27 254:0 /run/netns /run/netns rw,relatime shared:1 - ext4 /dev/vda rw\n"+
		"43 42 0:4 net:[4026532177] /run/netns/flb-sw rw shared:2 - nsfs nsfs rw\n")
	slave := write("slave", "95 54 254:0 /run/netns /run/netns rw,relatime master:1 - ext4 /dev/vda rw\n")
	none := write("none", "1 0 254:0 / / rw - ext4 /dev/vda rw\n")
	if got := runNetnsPeer(root); got != "shared:1" {
		t.Errorf("root: %q", got)
	}
	if got := runNetnsPeer(slave); got != "master:1" {
		t.Errorf("slave: %q", got)
	}
	if got := runNetnsPeer(none); got != "" {
		t.Errorf("none: %q", got)
	}
}
