package main

// control-plane: embedded etcd, kube-apiserver, kube-controller-manager and
// kube-scheduler in one process, all from upstream k8s.io/kubernetes code.
//
// The components are driven through their options packages (the same
// structs their cobra commands use: flags -> Options -> Complete/Validate ->
// app.Run) rather than through the cobra commands themselves, because each
// cobra command installs its own process-wide signal handler and applies the
// logging configuration, and both may only happen once per process. The
// flags we pass are exactly what the standalone binaries would receive.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/spf13/pflag"
	"go.etcd.io/etcd/server/v3/embed"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	logsapi "k8s.io/component-base/logs/api/v1"
	apiserverapp "k8s.io/kubernetes/cmd/kube-apiserver/app"
	apiserveroptions "k8s.io/kubernetes/cmd/kube-apiserver/app/options"
	cmapp "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	cmoptions "k8s.io/kubernetes/cmd/kube-controller-manager/app/options"
	schedapp "k8s.io/kubernetes/cmd/kube-scheduler/app"
	schedoptions "k8s.io/kubernetes/cmd/kube-scheduler/app/options"
)

type controlPlaneConfig struct {
	dataDir                string
	advertiseAddress       string
	serviceCIDR            string
	clusterCIDR            string
	nodeMonitorGracePeriod string
	verbosity              int
}

func runControlPlane(ctx context.Context, args []string) error {
	var c controlPlaneConfig
	fs := newFlagSet("control-plane")
	fs.StringVar(&c.dataDir, "data-dir", "", "state directory (certs, etcd data, kubeconfig, ready marker, apiserver.sock)")
	fs.StringVar(&c.advertiseAddress, "advertise-address", "192.0.2.10", "node address of the control plane")
	fs.StringVar(&c.serviceCIDR, "service-cidr", "198.19.0.0/16", "Service ClusterIP range(s), comma separated")
	fs.StringVar(&c.clusterCIDR, "cluster-cidr", "198.18.0.0/16", "pod range(s), comma separated")
	fs.StringVar(&c.nodeMonitorGracePeriod, "node-monitor-grace-period", "", "passed to kube-controller-manager (empty: upstream default)")
	fs.IntVar(&c.verbosity, "v", 0, "klog verbosity for all components")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if c.dataDir == "" {
		return errors.New("--data-dir is required")
	}
	advertise := net.ParseIP(c.advertiseAddress)
	if advertise == nil {
		return fmt.Errorf("bad --advertise-address %q", c.advertiseAddress)
	}
	dataDir, err := filepath.Abs(c.dataDir)
	if err != nil {
		return err
	}
	c.dataDir = dataDir
	if err := os.MkdirAll(c.dataDir, 0o700); err != nil {
		return err
	}
	readyFile := filepath.Join(c.dataDir, "ready")
	if err := os.Remove(readyFile); err != nil && !os.IsNotExist(err) {
		return err
	}

	// Logging is process-wide: apply it once here instead of per component.
	logCfg := logsapi.NewLoggingConfiguration()
	logCfg.Verbosity = logsapi.VerbosityLevel(c.verbosity)
	if err := logsapi.ValidateAndApply(logCfg, utilfeature.DefaultFeatureGate); err != nil {
		return err
	}

	pki := pkiFiles{Dir: filepath.Join(c.dataDir, "pki")}
	dns, ips := servingSANs(advertise, nil)
	if err := ensurePKI(pki, dns, ips); err != nil {
		return err
	}
	// kubeconfig for everything inside the lab, via the node address.
	kubeconfig := filepath.Join(c.dataDir, "kubeconfig")
	if err := writeKubeconfig(kubeconfig, "https://"+net.JoinHostPort(c.advertiseAddress, "6443"), pki); err != nil {
		return err
	}
	// kubeconfig for the in-process controllers: loopback, independent of
	// the node link (a downed eth0 must not cut the control plane off itself).
	localKubeconfig := filepath.Join(c.dataDir, "kubeconfig.local")
	if err := writeKubeconfig(localKubeconfig, "https://127.0.0.1:6443", pki); err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	etcd, err := startEtcd(filepath.Join(c.dataDir, "etcd"))
	if err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	defer func() {
		// Everything etcd committed is in its files (page cache), so
		// cutting a slow close short loses nothing; the lab's stop must not
		// hang on it.
		closed := make(chan struct{})
		go func() { etcd.Close(); close(closed) }()
		select {
		case <-closed:
			klog.Info("etcd stopped")
		case <-time.After(5 * time.Second):
			klog.Warning("etcd did not close within 5s, exiting anyway")
		}
	}()

	sock := filepath.Join(c.dataDir, "apiserver.sock")
	sockLn, err := listenUnix(sock)
	if err != nil {
		return err
	}
	defer os.Remove(sock)
	go serveUnixToTCP(ctx, sockLn, net.JoinHostPort(c.advertiseAddress, "6443"))

	// Each component runs until ctx is cancelled; the first one to fail
	// brings the whole control plane down (the lab restarts it).
	var wg sync.WaitGroup
	errCh := make(chan error, 4)
	runComponent := func(name string, fn func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := fn()
			if ctx.Err() == nil {
				if err == nil {
					err = errors.New("exited")
				}
				errCh <- fmt.Errorf("%s: %w", name, err)
			} else {
				klog.InfoS("component stopped", "component", name, "err", err)
			}
		}()
	}

	apiserverRun, err := prepareAPIServer(ctx, c, pki)
	if err != nil {
		return fmt.Errorf("kube-apiserver: %w", err)
	}
	runComponent("kube-apiserver", apiserverRun)

	client, err := clientFromKubeconfig(localKubeconfig)
	if err != nil {
		return err
	}
	if err := waitReadyz(ctx, client, errCh); err != nil {
		cancel()
		wg.Wait()
		return err
	}
	klog.Info("kube-apiserver is ready")

	cmRun, err := prepareControllerManager(ctx, c, pki, localKubeconfig)
	if err != nil {
		cancel()
		wg.Wait()
		return fmt.Errorf("kube-controller-manager: %w", err)
	}
	runComponent("kube-controller-manager", cmRun)

	schedRun, err := prepareScheduler(ctx, localKubeconfig)
	if err != nil {
		cancel()
		wg.Wait()
		return fmt.Errorf("kube-scheduler: %w", err)
	}
	runComponent("kube-scheduler", schedRun)

	if err := os.WriteFile(readyFile, []byte(time.Now().UTC().Format(time.RFC3339)+"\n"), 0o644); err != nil {
		return err
	}
	klog.InfoS("control plane ready", "kubeconfig", kubeconfig, "socket", sock)

	var runErr error
	select {
	case <-ctx.Done():
		klog.Info("shutting down control plane")
	case runErr = <-errCh:
		klog.ErrorS(runErr, "control plane component failed, shutting down")
	}
	os.Remove(readyFile)
	cancel()
	// The apiserver's graceful shutdown waits for open watches (node
	// agents, kube-proxies, ferrolb) to go away, up to a minute; the lab's
	// stop must not hang on that.
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		klog.Warning("components did not stop within 10s, exiting anyway")
	}
	return runErr
}

// startEtcd runs a single-member etcd on 127.0.0.1 of the control-plane
// netns (client 2379, peer 2380), data under dir.
func startEtcd(dir string) (*embed.Etcd, error) {
	cfg := embed.NewConfig()
	cfg.Name = "m-k8s"
	cfg.Dir = dir
	cfg.LogLevel = "warn"
	cfg.Logger = "zap"
	client, _ := url.Parse("http://127.0.0.1:2379")
	peer, _ := url.Parse("http://127.0.0.1:2380")
	cfg.ListenClientUrls = []url.URL{*client}
	cfg.AdvertiseClientUrls = []url.URL{*client}
	cfg.ListenPeerUrls = []url.URL{*peer}
	cfg.AdvertisePeerUrls = []url.URL{*peer}
	cfg.InitialCluster = cfg.Name + "=" + peer.String()
	// No fsync: on a busy 2-core machine fsync latency makes every API
	// write slow. Written data still sits in the page cache, so a killed or
	// restarted control plane keeps its cluster; only a host crash could
	// lose the last writes, and then the lab is rebuilt anyway.
	cfg.UnsafeNoFsync = true
	// Keep the database small in a long-running lab.
	cfg.AutoCompactionMode = "periodic"
	cfg.AutoCompactionRetention = "5m"
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, err
	}
	select {
	case <-e.Server.ReadyNotify():
		klog.Info("etcd is ready")
		return e, nil
	case err := <-e.Err():
		e.Close()
		return nil, err
	case <-time.After(60 * time.Second):
		e.Close()
		return nil, errors.New("not ready after 60s")
	}
}

func prepareAPIServer(ctx context.Context, c controlPlaneConfig, pki pkiFiles) (func() error, error) {
	s := apiserveroptions.NewServerRunOptions()
	fs := pflag.NewFlagSet("kube-apiserver", pflag.ContinueOnError)
	for _, f := range s.Flags().FlagSets {
		fs.AddFlagSet(f)
	}
	args := []string{
		"--etcd-servers=http://127.0.0.1:2379",
		"--bind-address=0.0.0.0",
		"--secure-port=6443",
		"--advertise-address=" + c.advertiseAddress,
		"--service-cluster-ip-range=" + c.serviceCIDR,
		"--tls-cert-file=" + pki.ServingCert(),
		"--tls-private-key-file=" + pki.ServingKey(),
		"--client-ca-file=" + pki.CACert(),
		"--service-account-key-file=" + pki.SAPub(),
		"--service-account-signing-key-file=" + pki.SAKey(),
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--requestheader-client-ca-file=" + pki.FrontProxyCACert(),
		"--requestheader-allowed-names=front-proxy-client",
		"--requestheader-username-headers=X-Remote-User",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--proxy-client-cert-file=" + pki.FrontProxyCert(),
		"--proxy-client-key-file=" + pki.FrontProxyKey(),
		// The node agent authenticates as the admin: no Node authorizer.
		"--authorization-mode=RBAC",
		"--allow-privileged=true",
		"--profiling=false",
		"--endpoint-reconciler-type=lease",
		"--event-ttl=1h",
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if err := s.GenericServerRunOptions.ComponentGlobalsRegistry.Set(); err != nil {
		return nil, err
	}
	completed, err := s.Complete(ctx)
	if err != nil {
		return nil, err
	}
	if errs := completed.Validate(); len(errs) != 0 {
		return nil, utilerrors.NewAggregate(errs)
	}
	return func() error { return apiserverapp.Run(ctx, completed) }, nil
}

func prepareControllerManager(ctx context.Context, c controlPlaneConfig, pki pkiFiles, kubeconfig string) (func() error, error) {
	s, err := cmoptions.NewKubeControllerManagerOptions()
	if err != nil {
		return nil, err
	}
	nfs := s.Flags(cmapp.KnownControllers(), cmapp.ControllersDisabledByDefault(), cmapp.ControllerAliases())
	s.ParsedFlags = &nfs
	fs := pflag.NewFlagSet("kube-controller-manager", pflag.ContinueOnError)
	for _, f := range nfs.FlagSets {
		fs.AddFlagSet(f)
	}
	args := []string{
		"--kubeconfig=" + kubeconfig,
		"--authentication-kubeconfig=" + kubeconfig,
		"--authorization-kubeconfig=" + kubeconfig,
		"--leader-elect=false",
		// The node agent sets spec.podCIDR itself; node-ipam stays off.
		"--allocate-node-cidrs=false",
		"--controllers=*",
		"--cluster-cidr=" + c.clusterCIDR,
		"--service-cluster-ip-range=" + c.serviceCIDR,
		"--service-account-private-key-file=" + pki.SAKey(),
		"--root-ca-file=" + pki.CACert(),
		"--use-service-account-credentials=true",
		"--cluster-signing-cert-file=" + pki.CACert(),
		"--cluster-signing-key-file=" + pki.CAKey(),
		// Health/metrics endpoint only on the netns loopback.
		"--bind-address=127.0.0.1",
		"--secure-port=10257",
		"--profiling=false",
	}
	if c.nodeMonitorGracePeriod != "" {
		args = append(args, "--node-monitor-grace-period="+c.nodeMonitorGracePeriod)
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if err := s.ComponentGlobalsRegistry.Set(); err != nil {
		return nil, err
	}
	cfg, err := s.Config(ctx, cmapp.KnownControllers(), cmapp.ControllersDisabledByDefault(), cmapp.ControllerAliases())
	if err != nil {
		return nil, err
	}
	completed := cfg.Complete()
	return func() error { return cmapp.Run(ctx, completed) }, nil
}

func prepareScheduler(ctx context.Context, kubeconfig string) (func() error, error) {
	opts := schedoptions.NewOptions()
	fs := pflag.NewFlagSet("kube-scheduler", pflag.ContinueOnError)
	for _, f := range opts.Flags.FlagSets {
		fs.AddFlagSet(f)
	}
	args := []string{
		"--kubeconfig=" + kubeconfig,
		"--authentication-kubeconfig=" + kubeconfig,
		"--authorization-kubeconfig=" + kubeconfig,
		"--leader-elect=false",
		"--bind-address=127.0.0.1",
		"--secure-port=10259",
		"--profiling=false",
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if err := opts.ComponentGlobalsRegistry.Set(); err != nil {
		return nil, err
	}
	if opts.InformerName == nil {
		name, err := cache.NewInformerName("kube-scheduler")
		if err != nil {
			return nil, err
		}
		opts.InformerName = name
	}
	cc, sched, err := schedapp.Setup(ctx, opts)
	if err != nil {
		return nil, err
	}
	return func() error { return schedapp.Run(ctx, cc, sched) }, nil
}

func clientFromKubeconfig(path string) (*kubernetes.Clientset, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, err
	}
	cfg.QPS = 50
	cfg.Burst = 100
	return kubernetes.NewForConfig(cfg)
}

// waitReadyz polls /readyz until it answers "ok", a component fails or ctx
// ends.
func waitReadyz(ctx context.Context, client *kubernetes.Clientset, errCh <-chan error) error {
	deadline := time.Now().Add(3 * time.Minute)
	for {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		body, err := client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(rctx)
		cancel()
		if err == nil && strings.TrimSpace(string(body)) == "ok" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("kube-apiserver /readyz not ok after 3m: %v", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-errCh:
			return err
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// listenUnix listens on path, replacing a stale socket left by a crash.
func listenUnix(path string) (net.Listener, error) {
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		return nil, err
	}
	return net.Listen("unix", path)
}

// serveUnixToTCP forwards each connection on ln to target. The control
// plane uses it to expose the apiserver to the root netns through a unix
// socket: sockets on the filesystem are not netns-scoped, so the root
// namespace never needs a lab address.
func serveUnixToTCP(ctx context.Context, ln net.Listener, target string) {
	go func() { <-ctx.Done(); ln.Close() }()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() == nil {
				klog.ErrorS(err, "apiserver.sock accept failed")
			}
			return
		}
		go func() {
			d := net.Dialer{Timeout: 5 * time.Second}
			up, err := d.DialContext(ctx, "tcp", target)
			if err != nil {
				klog.ErrorS(err, "apiserver.sock: dial", "target", target)
				conn.Close()
				return
			}
			pipe(conn, up)
		}()
	}
}

// pipe copies both directions until either side is done, then closes both.
func pipe(a, b net.Conn) {
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		io.Copy(dst, src)
		// Half-close so the peer sees EOF but can still answer.
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
		done <- struct{}{}
	}
	go cp(a, b)
	go cp(b, a)
	<-done
	<-done
	a.Close()
	b.Close()
}
