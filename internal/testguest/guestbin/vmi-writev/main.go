// Command vmi-writev is the test guest's vectored writer: busybox never
// calls writev(2), so this program gives the workload file writes that
// reach the kernel's vfs_writev instead of vfs_write.
//
// Usage:
//
//	vmi-writev <round> <path>
//	vmi-writev flood <n> <path>
//
// It creates path and writes it exactly as the shell writers write theirs
// (two opens, two writes), except that each write is one writev(2) of two
// iovecs (a line and its newline):
//
//	open(path, O_WRONLY|O_CREAT|O_TRUNC)  + writev("round R writev first", "\n")
//	open(path, O_WRONLY|O_CREAT|O_APPEND) + writev("round R writev second", "\n")
//
// then reports the file on standard output as one manifest line (one
// write(2)) and exits with status 0.
//
// Being a Go program it runs several threads, and it ends them all at once
// with exit_group(2): the workload's one multi-threaded exit, which the
// process.exit probe must count once (its last threads can run do_exit on
// two vCPUs at the same time).
//
// "flood" is the benchmark's write-flood (the guest's "flood N" command,
// never part of a round): it creates path once and makes n write(2) calls
// of 2 bytes each on it as fast as it can, then reports the file the same
// way (opens=1 writes=n round=0). Being compiled, it writes far faster
// than a shell loop could, which is what a hook hit-rate benchmark needs.
//
// It uses only the standard library (syscall), so the test guest builds it
// from its embedded source with nothing but the Go toolchain.
package main

import (
	"os"
	"runtime"
	"strconv"
	"syscall"
	"unsafe"
)

func main() {
	if len(os.Args) == 4 && os.Args[1] == "flood" {
		flood(os.Args[2], os.Args[3])
		return
	}
	if len(os.Args) != 3 {
		fail("usage: vmi-writev <round> <path>", nil)
	}
	round, path := os.Args[1], os.Args[2]
	if _, err := strconv.Atoi(round); err != nil {
		fail("bad round "+round, err)
	}
	first := "round " + round + " writev first"
	second := "round " + round + " writev second"
	n := writeFile(path, syscall.O_TRUNC, first)
	n += writeFile(path, syscall.O_APPEND, second)
	line := "VMI file path=" + path + " pid=" + strconv.Itoa(os.Getpid()) +
		" opens=2 writes=2 bytes=" + strconv.Itoa(n) + " round=" + round + "\n"
	if _, err := syscall.Write(1, []byte(line)); err != nil {
		fail("report", err)
	}
	os.Exit(0)
}

// flood creates path and makes n (a decimal count) write(2) calls of
// "x\n" on it, then reports it as one manifest line and exits with status 0.
func flood(count, path string) {
	n, err := strconv.Atoi(count)
	if err != nil || n <= 0 {
		fail("bad flood count "+count, err)
	}
	fd, err := syscall.Open(path, syscall.O_WRONLY|syscall.O_CREAT|syscall.O_TRUNC|syscall.O_CLOEXEC, 0o644)
	if err != nil {
		fail("open "+path, err)
	}
	b := []byte("x\n")
	for i := 0; i < n; i++ {
		if w, err := syscall.Write(fd, b); err != nil || w != len(b) {
			fail("flood write "+strconv.Itoa(i)+" of "+path, err)
		}
	}
	if err := syscall.Close(fd); err != nil {
		fail("close "+path, err)
	}
	line := "VMI file path=" + path + " pid=" + strconv.Itoa(os.Getpid()) +
		" opens=1 writes=" + count + " bytes=" + strconv.Itoa(n*len(b)) + " round=0\n"
	if _, err := syscall.Write(1, []byte(line)); err != nil {
		fail("report", err)
	}
	os.Exit(0)
}

// writeFile opens path for writing with O_CREAT and the given flag and
// writes s and a newline with one writev(2). It returns the bytes written.
func writeFile(path string, flag int, s string) int {
	fd, err := syscall.Open(path, syscall.O_WRONLY|syscall.O_CREAT|syscall.O_CLOEXEC|flag, 0o644)
	if err != nil {
		fail("open "+path, err)
	}
	bufs := [][]byte{[]byte(s), []byte("\n")}
	iov := make([]syscall.Iovec, len(bufs))
	want := 0
	for i, b := range bufs {
		iov[i].Base = &b[0]
		iov[i].SetLen(len(b))
		want += len(b)
	}
	r, _, errno := syscall.Syscall(syscall.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
	runtime.KeepAlive(bufs)
	if errno != 0 {
		fail("writev "+path, errno)
	}
	if int(r) != want {
		fail("writev "+path+": short write of "+strconv.Itoa(int(r))+" bytes", nil)
	}
	if err := syscall.Close(fd); err != nil {
		fail("close "+path, err)
	}
	return want
}

// fail reports on standard error (the console: no "VMI " prefix, so the
// host ignores it) and exits with status 1, which the manifest check flags.
func fail(msg string, err error) {
	if err != nil {
		msg += ": " + err.Error()
	}
	os.Stderr.WriteString("vmi-writev: " + msg + "\n")
	os.Exit(1)
}
