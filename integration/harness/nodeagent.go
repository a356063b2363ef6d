package main

// node-agent: stands in for the kubelet of one lab node. It registers the
// Node, keeps its Lease and status fresh, and runs the pods bound to it:
// each pod is a netns (see podnet.go) with one "k8s-harness echo" process
// per container. Only the container runtime is imitated; scheduling,
// endpoints, services and proxying are all upstream components.
//
// State: STATE/nodes/NODE/pods/<uid>.json records each pod's netns, veth and
// addresses. On start every recorded pod is torn down (its processes died
// with the node or are killed now) while its addresses stay reserved; pods
// that still exist in the API for this node are then recreated with the same
// addresses, the others are forgotten. Leftover "<netns>-p*" netns without a
// record are deleted.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
)

const (
	leaseDuration  = 40 * time.Second
	leaseRenew     = 3 * time.Second
	statusInterval = 10 * time.Second
	kubeletVersion = "v1.37.2"
)

// podRecord is the persisted part of a pod's runtime state.
type podRecord struct {
	UID         types.UID `json:"uid"`
	Namespace   string    `json:"namespace"`
	Name        string    `json:"name"`
	Netns       string    `json:"netns,omitempty"`
	Veth        string    `json:"veth,omitempty"`
	IPs         []string  `json:"ips"`
	HostNetwork bool      `json:"hostNetwork,omitempty"`
	PIDs        []int     `json:"pids,omitempty"`
}

func (r *podRecord) key() string { return r.Namespace + "/" + r.Name }

// container is one running echo process.
type container struct {
	name     string
	cmd      *exec.Cmd
	started  time.Time
	restarts int32
	exited   bool // set by the watcher when the process ends on its own
	stopping bool // set by teardown: the exit is expected
}

// podRuntime is a pod that the agent has (or had) set up.
type podRuntime struct {
	rec        podRecord
	running    bool // netns + processes are up and answered
	started    time.Time
	containers map[string]*container
}

type nodeAgent struct {
	client      kubernetes.Interface
	nodeName    string
	netnsName   string
	stateDir    string
	harness     string
	nodeIPs     []net.IP
	podCIDRs    []*net.IPNet
	podCIDRStrs []string

	podLister corelisters.PodLister
	queue     workqueue.TypedRateLimitingInterface[string]

	mu   sync.Mutex             // guards pods, and container fields
	pods map[string]*podRuntime // by namespace/name
}

func runNodeAgent(ctx context.Context, args []string) error {
	fs := newFlagSet("node-agent")
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig (STATE/cp/kubeconfig)")
	nodeName := fs.String("node-name", "", "Node name, e.g. w1-k8s")
	nodeIP := fs.String("node-ip", "", "node address(es), comma separated")
	podCIDR := fs.String("pod-cidr", "", "pod CIDR(s) of this node, comma separated")
	netnsName := fs.String("netns", "", "name of this node's netns (pod netns are named <netns>-p<id>)")
	stateDir := fs.String("state-dir", "", "STATE/nodes/NODE")
	harness := fs.String("harness", "", "path of k8s-harness for echo processes (default: this binary)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *kubeconfig == "" || *nodeName == "" || *nodeIP == "" || *podCIDR == "" || *netnsName == "" || *stateDir == "" {
		return errors.New("--kubeconfig, --node-name, --node-ip, --pod-cidr, --netns and --state-dir are required")
	}
	a := &nodeAgent{
		nodeName:  *nodeName,
		netnsName: *netnsName,
		stateDir:  *stateDir,
		harness:   *harness,
		pods:      map[string]*podRuntime{},
	}
	if a.harness == "" {
		self, err := os.Executable()
		if err != nil {
			return err
		}
		a.harness = self
	}
	for _, s := range strings.Split(*nodeIP, ",") {
		ip := net.ParseIP(strings.TrimSpace(s))
		if ip == nil {
			return fmt.Errorf("bad --node-ip %q", s)
		}
		a.nodeIPs = append(a.nodeIPs, ip)
	}
	for _, s := range strings.Split(*podCIDR, ",") {
		_, cidr, err := net.ParseCIDR(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("bad --pod-cidr: %w", err)
		}
		a.podCIDRs = append(a.podCIDRs, cidr)
		a.podCIDRStrs = append(a.podCIDRStrs, cidr.String())
	}
	if err := os.MkdirAll(a.podsDir(), 0o755); err != nil {
		return err
	}
	if err := captureHostMountNS(); err != nil {
		return err
	}
	client, err := clientFromKubeconfig(*kubeconfig)
	if err != nil {
		return err
	}
	a.client = client
	return a.run(ctx)
}

func (a *nodeAgent) podsDir() string { return filepath.Join(a.stateDir, "pods") }

func (a *nodeAgent) run(ctx context.Context) error {
	// 1. Whatever a previous run left behind is torn down first.
	if err := a.adoptRecords(); err != nil {
		return err
	}
	a.removeStrayNetns()

	// 2. The Node object, its Lease and status heartbeats.
	if err := a.registerNode(ctx); err != nil {
		return err
	}
	go a.leaseLoop(ctx)
	go a.statusLoop(ctx)

	// 3. Pods bound to this node.
	factory := informers.NewSharedInformerFactoryWithOptions(a.client, 30*time.Second,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = "spec.nodeName=" + a.nodeName
		}))
	podInformer := factory.Core().V1().Pods()
	a.podLister = podInformer.Lister()
	a.queue = workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]())
	enqueue := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			a.queue.Add(key)
		}
	}
	podInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
		DeleteFunc: enqueue,
	})
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), podInformer.Informer().HasSynced) {
		a.shutdown()
		return nil
	}
	// Records whose pod is gone get a sync too (which removes them).
	a.mu.Lock()
	for key := range a.pods {
		a.queue.Add(key)
	}
	a.mu.Unlock()

	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for a.processNext(ctx) {
			}
		}()
	}
	klog.InfoS("node agent running", "node", a.nodeName, "podCIDRs", a.podCIDRStrs)
	<-ctx.Done()
	a.queue.ShutDown()
	wg.Wait()
	factory.Shutdown()
	a.shutdown()
	return nil
}

// shutdown stops every pod's processes and removes its netns. Records stay
// so that a restarted agent gives the pods the same addresses.
func (a *nodeAgent) shutdown() {
	a.mu.Lock()
	rts := make([]*podRuntime, 0, len(a.pods))
	for _, rt := range a.pods {
		rts = append(rts, rt)
	}
	a.mu.Unlock()
	for _, rt := range rts {
		a.stopPod(rt)
	}
	klog.InfoS("node agent stopped", "node", a.nodeName, "pods", len(rts))
}

// ---------------------------------------------------------------- records

func (a *nodeAgent) recordPath(uid types.UID) string {
	return filepath.Join(a.podsDir(), string(uid)+".json")
}

func (a *nodeAgent) saveRecord(rec *podRecord) error {
	data, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(a.recordPath(rec.UID), data, 0o644)
}

func (a *nodeAgent) deleteRecord(rec *podRecord) {
	if err := os.Remove(a.recordPath(rec.UID)); err != nil && !os.IsNotExist(err) {
		klog.ErrorS(err, "removing pod record", "pod", rec.key())
	}
}

// adoptRecords loads the records of a previous run and tears their pods
// down (processes killed, netns deleted), keeping the address reservations.
func (a *nodeAgent) adoptRecords() error {
	entries, err := os.ReadDir(a.podsDir())
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		path := filepath.Join(a.podsDir(), e.Name())
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		var rec podRecord
		if err := json.Unmarshal(data, &rec); err != nil || rec.UID == "" {
			klog.ErrorS(err, "dropping unreadable pod record", "file", path)
			os.Remove(path)
			continue
		}
		for _, pid := range rec.PIDs {
			killStaleEcho(pid, rec.Name)
		}
		if !rec.HostNetwork {
			pn := podNet{Netns: rec.Netns, Veth: rec.Veth}
			if err := pn.teardown(); err != nil {
				klog.ErrorS(err, "cleaning up pod from previous run", "pod", rec.key())
			}
		}
		rec.PIDs = nil
		a.pods[rec.key()] = &podRuntime{rec: rec, containers: map[string]*container{}}
		klog.InfoS("found pod from previous run", "pod", rec.key(), "ips", rec.IPs)
	}
	return nil
}

// killStaleEcho kills pid if it still is an echo process of pod name (the
// PID may have been reused since the record was written).
func killStaleEcho(pid int, name string) {
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return
	}
	args := strings.Split(string(cmdline), "\x00")
	isEcho, hasName := false, false
	for i, arg := range args {
		if arg == "echo" {
			isEcho = true
		}
		if arg == "--name" && i+1 < len(args) && args[i+1] == name {
			hasName = true
		}
	}
	if isEcho && hasName {
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

// removeStrayNetns deletes "<netns>-p*" namespaces that no record knows
// (a crash between creating the netns and writing the record).
func (a *nodeAgent) removeStrayNetns() {
	names, err := netnsList()
	if err != nil {
		klog.ErrorS(err, "listing netns")
		return
	}
	known := map[string]bool{}
	for _, rt := range a.pods {
		known[rt.rec.Netns] = true
	}
	for _, n := range names {
		if strings.HasPrefix(n, a.netnsName+"-p") && !known[n] {
			klog.InfoS("removing stray pod netns", "netns", n)
			if err := netnsDel(n); err != nil {
				klog.ErrorS(err, "removing stray netns", "netns", n)
			}
		}
	}
}

// ------------------------------------------------------------------- node

func (a *nodeAgent) nodeLabels() map[string]string {
	labels := map[string]string{
		"kubernetes.io/hostname": a.nodeName,
		"kubernetes.io/os":       "linux",
		"kubernetes.io/arch":     runtime.GOARCH,
		"beta.kubernetes.io/os":  "linux",
	}
	// The lab's control-plane node is m-k8s (netns flb-m-k8s).
	if a.nodeName == "m-k8s" || strings.HasPrefix(a.nodeName, "m-") {
		labels["node-role.kubernetes.io/control-plane"] = ""
	}
	return labels
}

func (a *nodeAgent) registerNode(ctx context.Context) error {
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: a.nodeName, Labels: a.nodeLabels()},
		Spec:       corev1.NodeSpec{PodCIDR: a.podCIDRStrs[0], PodCIDRs: a.podCIDRStrs},
	}
	for {
		_, err := a.client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
		if err == nil {
			klog.InfoS("registered node", "node", a.nodeName)
			break
		}
		if apierrors.IsAlreadyExists(err) {
			err = retry.RetryOnConflict(retry.DefaultRetry, func() error { return a.reconcileExistingNode(ctx) })
			if err == nil {
				break
			}
		}
		klog.ErrorS(err, "registering node, retrying")
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
	for {
		err := a.updateNodeStatus(ctx)
		if err == nil || ctx.Err() != nil {
			return err
		}
		klog.ErrorS(err, "posting node status, retrying")
		time.Sleep(time.Second)
	}
}

// reconcileExistingNode makes an existing Node carry our labels and pod
// CIDRs (the latter are immutable once set: a mismatch is reported).
func (a *nodeAgent) reconcileExistingNode(ctx context.Context) error {
	node, err := a.client.CoreV1().Nodes().Get(ctx, a.nodeName, metav1.GetOptions{})
	if err != nil {
		return err
	}
	changed := false
	if node.Labels == nil {
		node.Labels = map[string]string{}
	}
	for k, v := range a.nodeLabels() {
		if cur, ok := node.Labels[k]; !ok || cur != v {
			node.Labels[k] = v
			changed = true
		}
	}
	if node.Spec.PodCIDR == "" {
		node.Spec.PodCIDR = a.podCIDRStrs[0]
		node.Spec.PodCIDRs = a.podCIDRStrs
		changed = true
	} else if strings.Join(node.Spec.PodCIDRs, ",") != strings.Join(a.podCIDRStrs, ",") {
		klog.ErrorS(nil, "existing Node has other pod CIDRs (immutable); keeping them", "node", a.nodeName,
			"have", node.Spec.PodCIDRs, "want", a.podCIDRStrs)
	}
	klog.InfoS("node already registered", "node", a.nodeName)
	if !changed {
		return nil
	}
	_, err = a.client.CoreV1().Nodes().Update(ctx, node, metav1.UpdateOptions{})
	return err
}

func (a *nodeAgent) desiredNodeStatus(old corev1.NodeStatus) corev1.NodeStatus {
	now := metav1.Now()
	st := *old.DeepCopy()
	st.Addresses = nil
	for _, ip := range a.nodeIPs {
		st.Addresses = append(st.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: ip.String()})
	}
	st.Addresses = append(st.Addresses, corev1.NodeAddress{Type: corev1.NodeHostName, Address: a.nodeName})
	res := corev1.ResourceList{
		corev1.ResourceCPU:              *resource.NewQuantity(int64(runtime.NumCPU()), resource.DecimalSI),
		corev1.ResourceMemory:           resource.MustParse("8Gi"),
		corev1.ResourcePods:             resource.MustParse("110"),
		corev1.ResourceEphemeralStorage: resource.MustParse("20Gi"),
	}
	st.Capacity = res
	st.Allocatable = res.DeepCopy()
	st.NodeInfo = corev1.NodeSystemInfo{
		MachineID:               "ferrolb-lab-" + a.nodeName,
		SystemUUID:              "ferrolb-lab-" + a.nodeName,
		BootID:                  old.NodeInfo.BootID,
		KernelVersion:           kernelVersion(),
		OSImage:                 "ferrolb lab netns",
		ContainerRuntimeVersion: "k8s-harness://0.1",
		KubeletVersion:          kubeletVersion,
		OperatingSystem:         "linux",
		Architecture:            runtime.GOARCH,
	}
	st.DaemonEndpoints = corev1.NodeDaemonEndpoints{}
	want := []corev1.NodeCondition{
		{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", Message: "k8s-harness node agent is posting ready status"},
		{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientMemory"},
		{Type: corev1.NodeDiskPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasNoDiskPressure"},
		{Type: corev1.NodePIDPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientPID"},
		{Type: corev1.NodeNetworkUnavailable, Status: corev1.ConditionFalse, Reason: "RouteCreated", Message: "lab routes are installed by the lab"},
	}
	var conds []corev1.NodeCondition
	for _, w := range want {
		w.LastHeartbeatTime = now
		w.LastTransitionTime = now
		for _, o := range old.Conditions {
			if o.Type == w.Type && o.Status == w.Status {
				w.LastTransitionTime = o.LastTransitionTime
			}
		}
		conds = append(conds, w)
	}
	st.Conditions = conds
	return st
}

func kernelVersion() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func (a *nodeAgent) updateNodeStatus(ctx context.Context) error {
	// Controllers (node lifecycle, ttl) write the Node too: retry on
	// conflict with a fresh copy.
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		node, err := a.client.CoreV1().Nodes().Get(ctx, a.nodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		node.Status = a.desiredNodeStatus(node.Status)
		_, err = a.client.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{})
		return err
	})
}

func (a *nodeAgent) statusLoop(ctx context.Context) {
	t := time.NewTicker(statusInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := a.updateNodeStatus(ctx)
		if apierrors.IsNotFound(err) {
			// Someone deleted the Node: register again, like a kubelet.
			klog.InfoS("node object gone, registering again", "node", a.nodeName)
			err = a.registerNode(ctx)
		}
		if err != nil && ctx.Err() == nil {
			klog.ErrorS(err, "updating node status")
		}
	}
}

func (a *nodeAgent) leaseLoop(ctx context.Context) {
	leases := a.client.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	for {
		now := metav1.NewMicroTime(time.Now())
		lease, err := leases.Get(ctx, a.nodeName, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			lease = &coordinationv1.Lease{
				ObjectMeta: metav1.ObjectMeta{Name: a.nodeName, Namespace: corev1.NamespaceNodeLease},
				Spec: coordinationv1.LeaseSpec{
					HolderIdentity:       ptr.To(a.nodeName),
					LeaseDurationSeconds: ptr.To(int32(leaseDuration / time.Second)),
					RenewTime:            &now,
				},
			}
			// Owned by the Node, so deleting the Node deletes the Lease.
			if node, nerr := a.client.CoreV1().Nodes().Get(ctx, a.nodeName, metav1.GetOptions{}); nerr == nil {
				lease.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID}}
			}
			_, err = leases.Create(ctx, lease, metav1.CreateOptions{})
		case err == nil:
			lease.Spec.HolderIdentity = ptr.To(a.nodeName)
			lease.Spec.LeaseDurationSeconds = ptr.To(int32(leaseDuration / time.Second))
			lease.Spec.RenewTime = &now
			_, err = leases.Update(ctx, lease, metav1.UpdateOptions{})
		}
		if err != nil && ctx.Err() == nil {
			klog.ErrorS(err, "renewing node lease")
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(leaseRenew):
		}
	}
}

// ------------------------------------------------------------------- pods

func (a *nodeAgent) processNext(ctx context.Context) bool {
	key, quit := a.queue.Get()
	if quit {
		return false
	}
	defer a.queue.Done(key)
	if err := a.syncPod(ctx, key); err != nil {
		if ctx.Err() == nil {
			klog.ErrorS(err, "syncing pod, will retry", "pod", key)
			a.queue.AddRateLimited(key)
		}
		return true
	}
	a.queue.Forget(key)
	return true
}

func (a *nodeAgent) syncPod(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	pod, err := a.podLister.Pods(ns).Get(name)
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	a.mu.Lock()
	rt := a.pods[key]
	a.mu.Unlock()

	// Gone from the API, or replaced by a new pod of the same name.
	if pod == nil || (rt != nil && rt.rec.UID != pod.UID) {
		if rt != nil {
			a.removePod(rt)
			rt = nil
		}
		if pod == nil {
			return nil
		}
	}
	if pod.DeletionTimestamp != nil {
		if rt != nil {
			a.removePod(rt)
		}
		// Processes are gone: finalize, like a kubelet does after the
		// containers stopped.
		err := a.client.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{
			GracePeriodSeconds: ptr.To(int64(0)),
			Preconditions:      metav1.NewUIDPreconditions(string(pod.UID)),
		})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			return err
		}
		klog.InfoS("pod deleted", "pod", key)
		return nil
	}
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		if rt != nil {
			a.removePod(rt)
		}
		return nil
	}
	if rt == nil || !rt.running {
		if rt, err = a.startPod(pod, rt); err != nil {
			return err
		}
	} else if err := a.restartExited(pod, rt); err != nil {
		return err
	}
	return a.reportPodStatus(ctx, pod, rt)
}

// echoImage tells whether a hostNetwork container should get an echo
// process (only echo images do; others, e.g. the ferrolb speaker, are run
// by the lab itself).
func echoImage(image string) bool { return strings.Contains(image, "echo") }

// listenPlan returns per container the addresses its echo process listens
// on: port 80 plus every declared TCP containerPort, each port used once
// per pod (the first container that wants it gets it).
func listenPlan(pod *corev1.Pod) map[string][]string {
	taken := map[int32]bool{}
	plan := map[string][]string{}
	for _, c := range pod.Spec.Containers {
		ports := []int32{80}
		for _, p := range c.Ports {
			if p.Protocol == "" || p.Protocol == corev1.ProtocolTCP {
				ports = append(ports, p.ContainerPort)
			}
		}
		for _, p := range ports {
			if !taken[p] {
				taken[p] = true
				plan[c.Name] = append(plan[c.Name], ":"+strconv.Itoa(int(p)))
			}
		}
	}
	return plan
}

// shortID is a pod's short id for netns and veth names: 8 hex chars of the
// UID keep vethName within the 15-char interface name limit.
func shortID(uid types.UID) string {
	s := strings.ReplaceAll(string(uid), "-", "")
	if len(s) > 8 {
		s = s[:8]
	}
	return s
}

// vethName is the node-side name of a pod's veth. The "veth" prefix is what
// CNIs use and what MetalLB-style speakers skip: a pod's link is never an
// interface to announce LoadBalancer addresses on.
func vethName(short string) string {
	return "veth" + short
}

// assignIPs picks the pod's addresses: the reserved ones of rec if still
// valid, otherwise the lowest free address per pod CIDR. Called with a.mu.
func (a *nodeAgent) assignIPs(rec *podRecord) error {
	used := map[string]bool{}
	for _, rt := range a.pods {
		if rt.rec.UID != rec.UID {
			for _, ip := range rt.rec.IPs {
				used[ip] = true
			}
		}
	}
	var ips []string
	for _, cidr := range a.podCIDRs {
		var pick net.IP
		for _, s := range rec.IPs {
			ip := net.ParseIP(s)
			if ip != nil && cidr.Contains(ip) && !used[ip.String()] && !ip.Equal(gatewayFor(cidr)) {
				pick = ip
			}
		}
		if pick == nil {
			ip, err := allocateIP(cidr, used)
			if err != nil {
				return err
			}
			pick = ip
		}
		ips = append(ips, pick.String())
	}
	rec.IPs = ips
	return nil
}

func (a *nodeAgent) startPod(pod *corev1.Pod, rt *podRuntime) (*podRuntime, error) {
	key := pod.Namespace + "/" + pod.Name
	short := shortID(pod.UID)
	a.mu.Lock()
	if rt == nil {
		rt = &podRuntime{rec: podRecord{UID: pod.UID, Namespace: pod.Namespace, Name: pod.Name}}
		a.pods[key] = rt
	}
	rt.containers = map[string]*container{}
	rt.rec.HostNetwork = pod.Spec.HostNetwork
	if pod.Spec.HostNetwork {
		rt.rec.Netns, rt.rec.Veth = "", ""
		rt.rec.IPs = nil
		for _, ip := range a.nodeIPs {
			rt.rec.IPs = append(rt.rec.IPs, ip.String())
		}
	} else {
		rt.rec.Netns = a.netnsName + "-p" + short
		rt.rec.Veth = vethName(short)
		if err := a.assignIPs(&rt.rec); err != nil {
			a.mu.Unlock()
			return rt, err
		}
	}
	// Persist before creating anything, so a crash leaves a record that
	// the next run can clean up.
	err := a.saveRecord(&rt.rec)
	a.mu.Unlock()
	if err != nil {
		return rt, err
	}

	var pn podNet
	if !pod.Spec.HostNetwork {
		pn = podNet{Netns: rt.rec.Netns, Veth: rt.rec.Veth}
		for i, s := range rt.rec.IPs {
			pn.IPs = append(pn.IPs, net.ParseIP(s))
			pn.GWs = append(pn.GWs, gatewayFor(a.podCIDRs[i]))
		}
		// Any remains of an earlier attempt go first.
		pn.teardown()
		if err := pn.setup(); err != nil {
			return rt, fmt.Errorf("pod network: %w", err)
		}
	}

	plan := listenPlan(pod)
	var probes []string
	for _, c := range pod.Spec.Containers {
		if pod.Spec.HostNetwork && !echoImage(c.Image) {
			continue
		}
		if err := a.startContainer(pod, rt, c, plan[c.Name]); err != nil {
			a.stopPod(rt)
			return rt, err
		}
		probes = append(probes, plan[c.Name]...)
	}
	a.saveRecordWithPIDs(rt)

	// Wait until every listener answers, probing from the node netns
	// through the pod's own address (so routing is verified too).
	target := rt.rec.IPs[0]
	if err := waitHTTP(target, probes, 20*time.Second); err != nil {
		a.stopPod(rt)
		return rt, err
	}
	a.mu.Lock()
	rt.running = true
	rt.started = time.Now()
	a.mu.Unlock()
	klog.InfoS("pod running", "pod", key, "ips", rt.rec.IPs, "netns", rt.rec.Netns)
	return rt, nil
}

// saveRecordWithPIDs persists rt's record with the PIDs of its running
// echo processes (so a restarted agent can kill survivors).
func (a *nodeAgent) saveRecordWithPIDs(rt *podRuntime) {
	a.mu.Lock()
	defer a.mu.Unlock()
	rt.rec.PIDs = nil
	for _, c := range rt.containers {
		if c.cmd != nil && c.cmd.Process != nil && !c.exited {
			rt.rec.PIDs = append(rt.rec.PIDs, c.cmd.Process.Pid)
		}
	}
	sort.Ints(rt.rec.PIDs)
	if err := a.saveRecord(&rt.rec); err != nil {
		klog.ErrorS(err, "saving pod record", "pod", rt.rec.key())
	}
}

// startContainer starts one echo process for container c (in the pod
// netns unless hostNetwork). Its output goes to a log file in the state dir.
func (a *nodeAgent) startContainer(pod *corev1.Pod, rt *podRuntime, c corev1.Container, listen []string) error {
	a.mu.Lock()
	prev := rt.containers[c.Name]
	a.mu.Unlock()
	ct := &container{name: c.Name}
	if prev != nil {
		ct.restarts = prev.restarts + 1
	}
	if len(listen) == 0 {
		// No port left for this container: nothing to serve, but it
		// counts as running (like a sidecar that never exits).
		ct.started = time.Now()
		a.mu.Lock()
		rt.containers[c.Name] = ct
		a.mu.Unlock()
		return nil
	}
	args := []string{a.harness, "echo", "--name", pod.Name, "--mode", echoModeForImage(c.Image),
		"--listen", strings.Join(listen, ",")}
	if !pod.Spec.HostNetwork {
		args = append([]string{"nsenter", "--net=/run/netns/" + rt.rec.Netns, "--"}, args...)
	}
	logPath := filepath.Join(a.podsDir(), fmt.Sprintf("%s_%s_%s.log", pod.Namespace, pod.Name, c.Name))
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Own process group (a Ctrl-C of the agent's terminal must not kill
	// pods behind its back) and die with the agent if it is SIGKILLed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	logf.Close()
	ct.cmd = cmd
	ct.started = time.Now()
	a.mu.Lock()
	rt.containers[c.Name] = ct
	a.mu.Unlock()
	key := rt.rec.key()
	go func() {
		err := cmd.Wait()
		a.mu.Lock()
		ct.exited = true
		expected := ct.stopping
		a.mu.Unlock()
		if !expected {
			klog.InfoS("container exited, will restart", "pod", key, "container", ct.name, "err", err)
			if a.queue != nil {
				a.queue.Add(key)
			}
		}
	}()
	return nil
}

// restartExited restarts containers whose process ended on its own.
func (a *nodeAgent) restartExited(pod *corev1.Pod, rt *podRuntime) error {
	plan := listenPlan(pod)
	for _, c := range pod.Spec.Containers {
		a.mu.Lock()
		ct := rt.containers[c.Name]
		dead := ct != nil && ct.exited && !ct.stopping
		a.mu.Unlock()
		if !dead {
			continue
		}
		if err := a.startContainer(pod, rt, c, plan[c.Name]); err != nil {
			return err
		}
		if err := waitHTTP(rt.rec.IPs[0], plan[c.Name], 20*time.Second); err != nil {
			return err
		}
		a.saveRecordWithPIDs(rt)
	}
	return nil
}

// stopPod stops the processes (SIGTERM, then SIGKILL after 2s) and removes
// the pod netns. The record stays.
func (a *nodeAgent) stopPod(rt *podRuntime) {
	a.mu.Lock()
	rt.running = false
	var cmds []*exec.Cmd
	for _, ct := range rt.containers {
		ct.stopping = true
		if ct.cmd != nil && ct.cmd.Process != nil && !ct.exited {
			cmds = append(cmds, ct.cmd)
		}
	}
	a.mu.Unlock()
	for _, cmd := range cmds {
		cmd.Process.Signal(syscall.SIGTERM)
	}
	deadline := time.Now().Add(2 * time.Second)
	for _, cmd := range cmds {
		for time.Now().Before(deadline) && processAlive(cmd.Process.Pid) {
			time.Sleep(20 * time.Millisecond)
		}
		cmd.Process.Kill()
	}
	if !rt.rec.HostNetwork && rt.rec.Netns != "" {
		pn := podNet{Netns: rt.rec.Netns, Veth: rt.rec.Veth}
		if err := pn.teardown(); err != nil {
			klog.ErrorS(err, "removing pod network", "pod", rt.rec.key())
		}
	}
}

func processAlive(pid int) bool {
	// A zombie still answers kill(0); check /proc state instead.
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z'
	}
	return true
}

// removePod stops a pod and forgets it (record and address reservation).
func (a *nodeAgent) removePod(rt *podRuntime) {
	a.stopPod(rt)
	a.mu.Lock()
	if a.pods[rt.rec.key()] == rt {
		delete(a.pods, rt.rec.key())
	}
	a.mu.Unlock()
	a.deleteRecord(&rt.rec)
	// The echo logs of a pod that is gone are of no further use.
	logs, _ := filepath.Glob(filepath.Join(a.podsDir(), fmt.Sprintf("%s_%s_*.log", rt.rec.Namespace, rt.rec.Name)))
	for _, l := range logs {
		os.Remove(l)
	}
	klog.InfoS("pod removed", "pod", rt.rec.key(), "uid", rt.rec.UID)
}

// waitHTTP GETs http://ip:port/ for each ":port" in listens until all
// answer or the timeout passes.
func waitHTTP(ip string, listens []string, timeout time.Duration) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	for _, l := range listens {
		url := "http://" + net.JoinHostPort(ip, strings.TrimPrefix(l, ":")) + "/"
		for {
			resp, err := client.Get(url)
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s did not answer within %s: %w", url, timeout, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}

// ----------------------------------------------------------------- status

func (a *nodeAgent) reportPodStatus(ctx context.Context, pod *corev1.Pod, rt *podRuntime) error {
	a.mu.Lock()
	st := a.desiredPodStatus(pod, rt)
	a.mu.Unlock()
	if apiequality.Semantic.DeepEqual(pod.Status, st) {
		return nil
	}
	p := pod.DeepCopy()
	p.Status = st
	_, err := a.client.CoreV1().Pods(p.Namespace).UpdateStatus(ctx, p, metav1.UpdateOptions{})
	if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
		// The informer will bring the newer object (or the deletion).
		return nil
	}
	return err
}

// desiredPodStatus is the status of a running pod. Called with a.mu held.
func (a *nodeAgent) desiredPodStatus(pod *corev1.Pod, rt *podRuntime) corev1.PodStatus {
	st := *pod.Status.DeepCopy()
	started := metav1.NewTime(rt.started.Truncate(time.Second))
	st.Phase = corev1.PodRunning
	st.Reason, st.Message = "", ""
	st.HostIP = a.nodeIPs[0].String()
	st.HostIPs = nil
	for _, ip := range a.nodeIPs {
		st.HostIPs = append(st.HostIPs, corev1.HostIP{IP: ip.String()})
	}
	st.PodIP = rt.rec.IPs[0]
	st.PodIPs = nil
	for _, ip := range rt.rec.IPs {
		st.PodIPs = append(st.PodIPs, corev1.PodIP{IP: ip})
	}
	if st.StartTime == nil {
		st.StartTime = &started
	}
	setCond := func(t corev1.PodConditionType) {
		for i := range st.Conditions {
			if st.Conditions[i].Type == t {
				if st.Conditions[i].Status != corev1.ConditionTrue {
					st.Conditions[i].Status = corev1.ConditionTrue
					st.Conditions[i].LastTransitionTime = started
					st.Conditions[i].Reason, st.Conditions[i].Message = "", ""
				}
				return
			}
		}
		st.Conditions = append(st.Conditions, corev1.PodCondition{Type: t, Status: corev1.ConditionTrue, LastTransitionTime: started})
	}
	for _, t := range []corev1.PodConditionType{corev1.PodReadyToStartContainers, corev1.PodInitialized,
		corev1.ContainersReady, corev1.PodReady, corev1.PodScheduled} {
		setCond(t)
	}
	st.InitContainerStatuses = nil
	for _, c := range pod.Spec.InitContainers {
		st.InitContainerStatuses = append(st.InitContainerStatuses, corev1.ContainerStatus{
			Name: c.Name, Image: c.Image, ImageID: "harness://" + c.Image,
			ContainerID: "harness://" + shortID(pod.UID) + "-" + c.Name,
			Ready:       true,
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				ExitCode: 0, Reason: "Completed", StartedAt: started, FinishedAt: started,
				ContainerID: "harness://" + shortID(pod.UID) + "-" + c.Name}},
		})
	}
	st.ContainerStatuses = nil
	for _, c := range pod.Spec.Containers {
		var restarts int32
		cStarted := started
		if ct := rt.containers[c.Name]; ct != nil {
			restarts = ct.restarts
			if ct.restarts > 0 {
				cStarted = metav1.NewTime(ct.started.Truncate(time.Second))
			}
		}
		st.ContainerStatuses = append(st.ContainerStatuses, corev1.ContainerStatus{
			Name: c.Name, Image: c.Image, ImageID: "harness://" + c.Image,
			ContainerID:  "harness://" + shortID(pod.UID) + "-" + c.Name,
			Ready:        true,
			Started:      ptr.To(true),
			RestartCount: restarts,
			State:        corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: cStarted}},
		})
	}
	return st
}
