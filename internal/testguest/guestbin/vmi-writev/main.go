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
// write(2)). It then copies that file by the three other paths by which
// data reaches a file, one call each, into new files, renames the last one
// and reports each (see CopyFile, RenamedFile):
//
//	sendfile(2)        path.s <- path         "VMI copy ... syscall=sendfile"
//	splice(2)          path.p <- a pipe        "VMI copy ... syscall=splice"
//	copy_file_range(2) path.c <- path         "VMI copy ... syscall=copy_file_range"
//	rename(2)          path.c -> path.moved   "VMI rename ..."
//	io_uring WRITE     path.u <- its bytes    "VMI copy ... syscall=io_uring"
//
// and exits with status 0.
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
	"sync/atomic"
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
	report(line)
	copies(round, path, n)
	os.Exit(0)
}

// report writes one manifest line with one write(2).
func report(line string) {
	if _, err := syscall.Write(1, []byte(line)); err != nil {
		fail("report", err)
	}
}

// sysCopyFileRange is copy_file_range(2) on linux/amd64 (the syscall
// package predates it).
const sysCopyFileRange = 326

// copies copies src (n bytes) by sendfile, splice and copy_file_range,
// one call each, and renames the copy_file_range one.
func copies(round, src string, n int) {
	pid := strconv.Itoa(os.Getpid())
	in, err := syscall.Open(src, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		fail("open "+src, err)
	}
	copied := func(dst, family string, r uintptr, errno error) {
		if errno != nil {
			fail(family+" "+dst, errno)
		}
		if int(r) != n {
			fail(family+" "+dst+": copied "+strconv.Itoa(int(r))+" bytes", nil)
		}
		report("VMI copy path=" + dst + " pid=" + pid + " syscall=" + family + " calls=1 bytes=" + strconv.Itoa(n) + " round=" + round + "\n")
	}

	dst := src + ".s"
	out := create(dst)
	off := int64(0)
	w, err := syscall.Sendfile(out, in, &off, n)
	copied(dst, "sendfile", uintptr(w), err)
	syscall.Close(out)

	dst = src + ".p"
	out = create(dst)
	var p [2]int
	if err := syscall.Pipe2(p[:], syscall.O_CLOEXEC); err != nil {
		fail("pipe", err)
	}
	data := make([]byte, n)
	for i := range data {
		data[i] = 'p'
	}
	if _, err := syscall.Write(p[1], data); err != nil {
		fail("write pipe", err)
	}
	w64, err := syscall.Splice(p[0], nil, out, nil, n, 0)
	copied(dst, "splice", uintptr(w64), err)
	syscall.Close(p[0])
	syscall.Close(p[1])
	syscall.Close(out)

	dst = src + ".c"
	out = create(dst)
	r, _, errno := syscall.Syscall6(sysCopyFileRange, uintptr(in), 0, uintptr(out), 0, uintptr(n), 0)
	var e error
	if errno != 0 {
		e = errno
	}
	copied(dst, "copy_file_range", r, e)
	syscall.Close(out)
	syscall.Close(in)

	moved := src + ".moved"
	if err := syscall.Rename(dst, moved); err != nil {
		fail("rename "+dst, err)
	}
	report("VMI rename old=" + dst + " new=" + moved + " pid=" + pid + " round=" + round + "\n")

	dst = src + ".u"
	out = create(dst)
	// A request the kernel cancelled (ECANCELED: its io-wq work was
	// dropped before it ran, seen once in CI) wrote nothing: submit it
	// again, a few times at most. One thread throughout: io_uring's
	// worker pool belongs to the submitting thread.
	runtime.LockOSThread()
	ur := -1
	for try := 0; ur < 0 && try < 3; try++ {
		ur = uringWrite(out, data)
	}
	runtime.UnlockOSThread()
	if ur < 0 {
		fail("io_uring write", syscall.ECANCELED)
	}
	copied(dst, "io_uring", uintptr(ur), nil)
	syscall.Close(out)
}

// io_uring system calls and layout (include/uapi/linux/io_uring.h).
const (
	sysIOUringSetup = 425
	sysIOUringEnter = 426
	opWrite         = 23 // IORING_OP_WRITE
	enterGetEvents  = 1
	offSQRing       = 0
	offCQRing       = 0x8000000
	offSQEs         = 0x10000000
)

// uringWrite writes b to fd at offset 0 with one IORING_OP_WRITE through
// a one-entry ring, waits for its completion and returns its result, or
// -1 if the kernel cancelled the request.
func uringWrite(fd int, b []byte) int {
	var p [120]byte // struct io_uring_params
	rfd, _, errno := syscall.Syscall(sysIOUringSetup, 1, uintptr(unsafe.Pointer(&p[0])), 0)
	if errno != 0 {
		fail("io_uring_setup", errno)
	}
	u32 := func(b []byte, off int) *uint32 { return (*uint32)(unsafe.Pointer(&b[off])) }
	sqEntries, cqEntries := *u32(p[:], 0), *u32(p[:], 4)
	sqArray, cqes := *u32(p[:], 64), *u32(p[:], 100)
	mm := func(off int64, n int) []byte {
		m, err := syscall.Mmap(int(rfd), off, n, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED|syscall.MAP_POPULATE)
		if err != nil {
			fail("io_uring mmap", err)
		}
		return m
	}
	sq := mm(offSQRing, int(sqArray+4*sqEntries))
	cq := mm(offCQRing, int(cqes+16*cqEntries))
	sqe := mm(offSQEs, int(64*sqEntries))
	sqe[0] = opWrite
	*(*int32)(unsafe.Pointer(&sqe[4])) = int32(fd)
	*(*uint64)(unsafe.Pointer(&sqe[16])) = uint64(uintptr(unsafe.Pointer(&b[0])))
	*u32(sqe, 24) = uint32(len(b))
	tail := u32(sq, int(*u32(p[:], 44)))
	mask := *u32(sq, int(*u32(p[:], 48)))
	*u32(sq, int(sqArray+4*(*tail&mask))) = 0
	atomic.AddUint32(tail, 1)
	if _, _, errno := syscall.Syscall6(sysIOUringEnter, rfd, 1, 1, enterGetEvents, 0, 0); errno != 0 {
		fail("io_uring_enter", errno)
	}
	head := atomic.LoadUint32(u32(cq, int(*u32(p[:], 80))))
	cmask := *u32(cq, int(*u32(p[:], 88)))
	res := *(*int32)(unsafe.Pointer(&cq[int(cqes)+16*int(head&cmask)+8]))
	runtime.KeepAlive(b)
	syscall.Munmap(sqe)
	syscall.Munmap(cq)
	syscall.Munmap(sq)
	syscall.Close(int(rfd))
	if res == -int32(syscall.ECANCELED) {
		return -1
	}
	if res < 0 {
		fail("io_uring write", syscall.Errno(-res))
	}
	return int(res)
}

// create makes a new file for writing.
func create(path string) int {
	fd, err := syscall.Open(path, syscall.O_WRONLY|syscall.O_CREAT|syscall.O_TRUNC|syscall.O_CLOEXEC, 0o644)
	if err != nil {
		fail("create "+path, err)
	}
	return fd
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
