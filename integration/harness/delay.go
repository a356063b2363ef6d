package main

// delay: the lab's packet delay, for kernels without sch_netem. It owns a TUN
// device in the namespace it runs in, holds every packet that arrives there
// for a fixed time and then sends it on through a raw socket whose mark keeps
// it off the TUN device's route, so it leaves through the normal routing.
// The Rust lab routes the packets of a delay fault into the device (nftables
// marks them, a policy rule sends the mark to a table whose default route is
// the device). The device is not persistent: it goes when this process does.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
	"unsafe"

	"k8s.io/klog/v2"
)

// A packet waiting for its time.
type heldPacket struct {
	due  time.Time
	data []byte
}

func runDelay(ctx context.Context, args []string) error {
	fs := newFlagSet("delay")
	name := fs.String("tun", "flb-delay", "TUN device to create")
	delay := fs.Duration("delay", 50*time.Millisecond, "how long each packet is held")
	mark := fs.Uint32("mark", 0x200000, "SO_MARK of the packets sent on (must not route them back into the device)")
	readyFile := fs.String("ready-file", "", "written once the device exists")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *delay < 0 || *delay > time.Minute {
		return fmt.Errorf("--delay %s: between 0 and 1m", *delay)
	}
	tun, err := openTun(*name)
	if err != nil {
		return fmt.Errorf("TUN device %s: %w", *name, err)
	}
	defer tun.Close()
	send4, err := rawSender(syscall.AF_INET, int(*mark))
	if err != nil {
		return fmt.Errorf("raw IPv4 socket: %w", err)
	}
	defer syscall.Close(send4)
	send6, err := rawSender(syscall.AF_INET6, int(*mark))
	if err != nil {
		return fmt.Errorf("raw IPv6 socket: %w", err)
	}
	defer syscall.Close(send6)
	if *readyFile != "" {
		if err := writeFileAtomic(*readyFile, []byte(*name+"\n"), 0o644); err != nil {
			return err
		}
	}
	klog.InfoS("delaying", "device", *name, "delay", *delay)

	// A constant delay keeps the order: one queue, one sender.
	queue := make(chan heldPacket, 8192)
	go func() {
		for p := range queue {
			time.Sleep(time.Until(p.due))
			if err := sendOn(send4, send6, p.data); err != nil {
				klog.V(2).InfoS("send failed", "err", err)
			}
		}
	}()
	go func() { <-ctx.Done(); tun.Close() }()
	buf := make([]byte, 65536)
	dropped := 0
	for {
		n, err := tun.Read(buf)
		if err != nil {
			if ctx.Err() != nil {
				close(queue)
				klog.InfoS("delay stopped", "queue-full drops", dropped)
				return nil
			}
			return fmt.Errorf("reading %s: %w", *name, err)
		}
		data := make([]byte, n)
		copy(data, buf[:n])
		select {
		case queue <- heldPacket{due: time.Now().Add(*delay), data: data}:
		default:
			dropped++
		}
	}
}

// openTun creates TUN device name (raw IP packets, no packet information
// header) and returns it open, non-blocking so that closing it ends a read.
func openTun(name string) (*os.File, error) {
	if len(name) >= syscall.IFNAMSIZ {
		return nil, fmt.Errorf("name longer than %d", syscall.IFNAMSIZ-1)
	}
	fd, err := syscall.Open("/dev/net/tun", syscall.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	var req struct {
		name  [syscall.IFNAMSIZ]byte
		flags uint16
		_     [22]byte
	}
	copy(req.name[:], name)
	req.flags = syscall.IFF_TUN | syscall.IFF_NO_PI
	_, _, errno := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), uintptr(syscall.TUNSETIFF), uintptr(unsafe.Pointer(&req)))
	if errno != 0 {
		syscall.Close(fd)
		return nil, errno
	}
	if err := syscall.SetNonblock(fd, true); err != nil {
		syscall.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), "/dev/net/tun"), nil
}

// rawSender is a raw socket of family that sends whole IP packets (header
// included) with mark.
func rawSender(family, mark int) (int, error) {
	fd, err := syscall.Socket(family, syscall.SOCK_RAW, syscall.IPPROTO_RAW)
	if err != nil {
		return -1, err
	}
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_MARK, mark); err != nil {
		syscall.Close(fd)
		return -1, fmt.Errorf("SO_MARK: %w", err)
	}
	return fd, nil
}

// sendOn sends one IP packet to its destination.
func sendOn(send4, send6 int, p []byte) error {
	if len(p) < 1 {
		return errors.New("empty packet")
	}
	switch p[0] >> 4 {
	case 4:
		if len(p) < 20 {
			return errors.New("short IPv4 packet")
		}
		var to syscall.SockaddrInet4
		copy(to.Addr[:], p[16:20])
		return syscall.Sendto(send4, p, 0, &to)
	case 6:
		if len(p) < 40 {
			return errors.New("short IPv6 packet")
		}
		var to syscall.SockaddrInet6
		copy(to.Addr[:], p[24:40])
		return syscall.Sendto(send6, p, 0, &to)
	default:
		return fmt.Errorf("IP version %d", p[0]>>4)
	}
}
