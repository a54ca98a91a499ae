// Package testguest builds and boots the project's reproducible QEMU test
// guest: Debian's cloud kernel and busybox-static fetched with apt, an
// initramfs whose /init runs a deterministic workload, and QEMU with shared
// RAM, gdbstub and QMP sockets. The workload reports what it did as
// manifest lines on the serial console, so introspected events can be
// compared one for one with what the guest really did.
package testguest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vmi-exporter/vmi-exporter/internal/procerr"
)

// Options configure Boot. The zero value boots with defaults.
type Options struct {
	// Dir holds the sockets. If empty, Boot creates a temporary directory
	// and Close removes it. Unix socket paths are limited to 107 bytes, so
	// keep it short.
	Dir string
	// RAMDir holds the guest RAM file. If empty, /dev/shm when it exists
	// (RAM-backed, so QEMU's dirty pages are never written back to a disk),
	// else Dir. Close removes the file.
	RAMDir string
	// RAMFile, if set, is the RAM file's path instead of a new name in
	// RAMDir, so that a guest booted again gets the same path (tests of an
	// exporter configured with it). A stale file is removed first; Close
	// removes it.
	RAMFile string
	// QEMU is the qemu-system-x86_64 binary: this, else $VMI_QEMU, else the
	// one in PATH.
	QEMU string
	// QEMUDataDir lists firmware/ROM directories, separated by ':', each
	// passed as -L; needed for a QEMU unpacked outside its install prefix
	// (see QEMUInstall): this, else $VMI_QEMU_DATADIR.
	QEMUDataDir string
	// QEMUModuleDir is where QEMU loads its modules from (QEMU_MODULE_DIR),
	// needed for an unpacked QEMU: this, else $VMI_QEMU_MODULE_DIR.
	QEMUModuleDir string
	// MemoryMiB is the guest RAM size; 256 if zero.
	MemoryMiB int
	// CPUs is the number of vCPUs; 2 if zero.
	CPUs int
	// CPU is the -cpu model; QEMU's default (qemu64, 4-level paging) if empty.
	// "max" enables LA57, so the guest uses 5-level paging.
	CPU string
	// LoopIntervalMS, if > 0, makes the guest loop rounds from boot on
	// (kernel command line vmi.workload=loop) with this pause.
	LoopIntervalMS int
	// Reboot lets a reset (the guest's own reboot, or QMP system_reset)
	// boot the guest again; by default QEMU exits instead (-no-reboot).
	Reboot bool
	// ExtraAppend is added to the kernel command line.
	ExtraAppend string
	// Plugin, if set, is the vmi-hooks plugin (.so, from BuildPlugin) that
	// QEMU loads, with its shared file at Guest.PluginSHM and PluginOpts
	// (key=value) as further plugin arguments.
	Plugin     string
	PluginOpts []string
	// ExtraArgs are added to the QEMU command line.
	ExtraArgs []string
	// Console receives every console line (debugging); may be nil.
	Console io.Writer
	// Log receives lifecycle messages; slog.Default() if nil.
	Log *slog.Logger
}

// Guest is a running test guest.
type Guest struct {
	// Dir holds the sockets.
	Dir string
	// QMPSocket is the QMP unix socket.
	QMPSocket string
	// GDBSocket is the gdbstub unix socket.
	GDBSocket string
	// RAMPath is the memory-backend-file shared with QEMU. Its offset N is
	// guest physical address N (q35 maps RAM below 2 GiB from address 0).
	RAMPath string
	// RAMSize is the RAM size in bytes.
	RAMSize int64
	// PluginSHM is the vmi-hooks plugin's shared file when Options.Plugin
	// is set (next to the RAM file), else empty.
	PluginSHM string
	// PID is QEMU's process id.
	PID int
	// Args is the QEMU command line.
	Args []string
	// Started is when QEMU was started.
	Started time.Time

	log     *slog.Logger
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	ownDir  bool
	console io.Writer

	exited  chan struct{} // closed when QEMU has exited
	waitErr error         // QEMU's exit status, valid after exited
	ready   chan struct{} // closed at the first "VMI idle"
	readyAt time.Time

	writeMu sync.Mutex // serialises commands
	mu      sync.Mutex
	subs    map[*subscription]struct{}
	// pending counts "VMI idle" lines owed for commands sent (each command
	// but poweroff ends with one; a loop's comes after it stops). The guest
	// is idle when it is 0; idleChanged is closed and replaced whenever it
	// drops.
	pending     int
	looping     bool
	idleChanged chan struct{}
	stderr      tailBuffer
	badLine     int
	closed      bool
}

type subscription struct {
	ch       chan Record
	overflow bool
}

// QEMUBinary returns the qemu-system-x86_64 binary that Boot runs for
// Options.QEMU set to qemu: qemu itself, else $VMI_QEMU, else
// qemu-system-x86_64 from PATH.
func QEMUBinary(qemu string) string {
	if qemu == "" {
		qemu = os.Getenv("VMI_QEMU")
	}
	if qemu == "" {
		qemu = "qemu-system-x86_64"
	}
	return qemu
}

// Boot starts QEMU with the assets and returns once its sockets exist and
// the RAM file has its full size. Use
// WaitReady to wait for the guest's workload to be ready. ctx bounds only the
// start; the guest runs until Close or Kill.
func Boot(ctx context.Context, a *Assets, o Options) (*Guest, error) {
	log := o.Log
	if log == nil {
		log = slog.Default()
	}
	qemuPath, err := exec.LookPath(QEMUBinary(o.QEMU))
	if err != nil {
		return nil, fmt.Errorf("testguest: qemu: %w", err)
	}
	datadir := o.QEMUDataDir
	if datadir == "" {
		datadir = os.Getenv("VMI_QEMU_DATADIR")
	}
	mem := o.MemoryMiB
	if mem <= 0 {
		mem = 256
	}
	if mem > 2048 {
		return nil, fmt.Errorf("testguest: %d MiB RAM: more than 2048 would split RAM around the PCI hole", mem)
	}
	cpus := o.CPUs
	if cpus <= 0 {
		cpus = 2
	}
	dir := o.Dir
	own := false
	if dir == "" {
		if dir, err = os.MkdirTemp("", "vmitg-"); err != nil {
			return nil, fmt.Errorf("testguest: %w", err)
		}
		own = true
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("testguest: %w", err)
	}
	g := &Guest{
		Dir:         dir,
		QMPSocket:   filepath.Join(dir, "qmp.sock"),
		GDBSocket:   filepath.Join(dir, "gdb.sock"),
		RAMPath:     filepath.Join(dir, "ram"),
		RAMSize:     int64(mem) << 20,
		log:         log,
		ownDir:      own,
		console:     o.Console,
		exited:      make(chan struct{}),
		ready:       make(chan struct{}),
		subs:        map[*subscription]struct{}{},
		idleChanged: make(chan struct{}),
	}
	if o.LoopIntervalMS > 0 {
		// The loop starts after the boot's "VMI idle"; it owes one more.
		g.pending, g.looping = 1, true
	}
	ramDir := o.RAMDir
	if ramDir == "" {
		if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
			ramDir = "/dev/shm"
		}
	}
	if o.RAMFile != "" {
		_ = os.Remove(o.RAMFile)
		g.RAMPath = o.RAMFile
	} else if ramDir != "" {
		f, err := os.CreateTemp(ramDir, "vmitg-*.ram")
		if err != nil {
			g.cleanup()
			return nil, fmt.Errorf("testguest: RAM file: %w", err)
		}
		f.Close()
		g.RAMPath = f.Name()
	}
	if o.Plugin != "" {
		g.PluginSHM = strings.TrimSuffix(g.RAMPath, ".ram") + ".hooks"
		_ = os.Remove(g.PluginSHM) // stale: the plugin creates it
	}
	if len(g.QMPSocket) > 107 {
		g.cleanup()
		return nil, fmt.Errorf("testguest: socket path %s too long for a unix socket", g.QMPSocket)
	}
	for _, p := range []string{g.QMPSocket, g.GDBSocket, filepath.Join(dir, "ram")} {
		if p != g.RAMPath {
			_ = os.Remove(p) // stale from an earlier run in the same dir
		}
	}

	kargs := []string{"console=ttyS0", "quiet", "loglevel=0", "panic=-1"}
	if o.LoopIntervalMS > 0 {
		kargs = append(kargs, "vmi.workload=loop", "vmi.interval_ms="+strconv.Itoa(o.LoopIntervalMS))
	}
	if o.ExtraAppend != "" {
		kargs = append(kargs, o.ExtraAppend)
	}
	args := []string{
		"-accel", "tcg",
		"-m", strconv.Itoa(mem),
		"-smp", strconv.Itoa(cpus),
		"-object", fmt.Sprintf("memory-backend-file,id=ram0,size=%dM,mem-path=%s,share=on", mem, g.RAMPath),
		"-machine", "q35,memory-backend=ram0",
		"-chardev", fmt.Sprintf("socket,id=gdb0,path=%s,server=on,wait=off", g.GDBSocket),
		"-gdb", "chardev:gdb0",
		"-qmp", fmt.Sprintf("unix:%s,server=on,wait=off", g.QMPSocket),
		// The serial console is QEMU's stdin/stdout: nothing is lost before
		// the host reads, unlike a socket nobody is connected to yet.
		"-chardev", "stdio,id=ser0,signal=off",
		"-serial", "chardev:ser0",
		"-display", "none", "-nodefaults",
		"-kernel", a.Kernel, "-initrd", a.Initrd,
		"-append", strings.Join(kargs, " "),
	}
	if !o.Reboot {
		args = append(args, "-no-reboot")
	}
	if o.CPU != "" {
		args = append(args, "-cpu", o.CPU)
	}
	for _, d := range filepath.SplitList(datadir) {
		if d != "" {
			args = append(args, "-L", d)
		}
	}
	if o.Plugin != "" {
		args = append(args, PluginArgs(o.Plugin, g.PluginSHM, o.PluginOpts...)...)
	}
	args = append(args, o.ExtraArgs...)
	g.Args = append([]string{qemuPath}, args...)

	cmd := exec.Command(qemuPath, args...)
	moddir := o.QEMUModuleDir
	if moddir == "" {
		moddir = os.Getenv("VMI_QEMU_MODULE_DIR")
	}
	if moddir != "" {
		cmd.Env = append(os.Environ(), "QEMU_MODULE_DIR="+moddir)
	}
	// If the test process dies, QEMU must not outlive it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	cmd.Stderr = &g.stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		g.cleanup()
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		g.cleanup()
		return nil, err
	}
	g.cmd, g.stdin = cmd, stdin
	g.Started = time.Now()
	if err := cmd.Start(); err != nil {
		g.cleanup()
		return nil, fmt.Errorf("testguest: start %s: %w", qemuPath, err)
	}
	g.PID = cmd.Process.Pid
	log.Info("started qemu", "pid", g.PID, "dir", dir, "qemu", qemuPath)
	go g.readConsole(stdout)
	go func() {
		g.waitErr = cmd.Wait()
		close(g.exited)
	}()

	// Wait for QEMU to create its sockets and size the RAM file, so callers
	// can connect and map it at once.
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		if exists(g.QMPSocket) && exists(g.GDBSocket) && fileSize(g.RAMPath) == g.RAMSize {
			return g, nil
		}
		select {
		case <-ctx.Done():
			g.Kill()
			return nil, fmt.Errorf("testguest: waiting for qemu sockets: %w", ctx.Err())
		case <-g.exited:
			err := g.exitError()
			g.cleanup()
			return nil, err
		case <-tick.C:
		}
	}
}

func fileSize(p string) int64 {
	st, err := os.Stat(p)
	if err != nil {
		return -1
	}
	return st.Size()
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// readConsole parses console lines and hands manifest records to
// subscribers. It never blocks on a subscriber, so a guest printing while
// nobody listens cannot stall QEMU.
func (g *Guest) readConsole(r io.Reader) {
	br := bufio.NewReaderSize(r, 64*1024)
	for {
		line, err := readLine(br, maxLineLen)
		if err != nil {
			// A last line without its newline was cut off, usually by
			// killing QEMU mid-write: show it, but it is no record.
			if line != "" && g.console != nil {
				fmt.Fprintln(g.console, line)
			}
			return
		}
		g.handleLine(line)
	}
}

// readLine reads one line, truncating (and discarding the rest of) lines
// longer than max.
func readLine(br *bufio.Reader, max int) (string, error) {
	var b []byte
	for {
		frag, err := br.ReadSlice('\n')
		if len(b) < max+1 {
			n := min(len(frag), max+1-len(b))
			b = append(b, frag[:n]...)
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		return strings.TrimRight(string(b), "\r\n"), err
	}
}

func (g *Guest) handleLine(line string) {
	if g.console != nil {
		fmt.Fprintln(g.console, line)
	}
	rec, ok, err := ParseLine(line)
	if !ok {
		return
	}
	if err != nil {
		g.mu.Lock()
		g.badLine++
		g.mu.Unlock()
		g.log.Warn("bad manifest line", "line", line, "err", err)
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	// Hand the record to current subscribers before marking the guest
	// ready: a subscriber that joins because of this idle (Run after
	// WaitReady) must not receive it.
	for s := range g.subs {
		select {
		case s.ch <- rec:
		default:
			s.overflow = true
		}
	}
	if rec.Kind != KindIdle {
		return
	}
	select {
	case <-g.ready:
	default:
		// The boot's "VMI idle" answers no command.
		g.readyAt = time.Now()
		close(g.ready)
		return
	}
	if g.pending > 0 {
		g.pending--
		close(g.idleChanged)
		g.idleChanged = make(chan struct{})
	}
}

func (g *Guest) subscribe() *subscription {
	s := &subscription{ch: make(chan Record, 1<<14)}
	g.mu.Lock()
	g.subs[s] = struct{}{}
	g.mu.Unlock()
	return s
}

func (g *Guest) unsubscribe(s *subscription) {
	g.mu.Lock()
	delete(g.subs, s)
	g.mu.Unlock()
}

// Records streams every manifest record until ctx is done or QEMU exits.
// Records are dropped if the reader falls 16384 records behind; the guest
// is never slowed down by a slow reader.
func (g *Guest) Records(ctx context.Context) <-chan Record {
	s := g.subscribe()
	out := make(chan Record)
	go func() {
		defer close(out)
		defer g.unsubscribe(s)
		for {
			select {
			case <-ctx.Done():
				return
			case <-g.exited:
				return
			case r := <-s.ch:
				select {
				case out <- r:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out
}

// WaitReady waits until the guest's /init first reports "VMI idle".
func (g *Guest) WaitReady(ctx context.Context) error {
	select {
	case <-g.ready:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("testguest: waiting for guest: %w", ctx.Err())
	case <-g.exited:
		return g.exitError()
	}
}

// BootTime is the time from starting QEMU to the first "VMI idle"; zero
// before that.
func (g *Guest) BootTime() time.Duration {
	select {
	case <-g.ready:
		return g.readyAt.Sub(g.Started)
	default:
		return 0
	}
}

// BadLines is the number of malformed manifest lines seen.
func (g *Guest) BadLines() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.badLine
}

// send writes one command line to the console.
func (g *Guest) send(cmd string) error {
	select {
	case <-g.exited:
		return g.exitError()
	default:
	}
	if _, err := io.WriteString(g.stdin, cmd+"\n"); err != nil {
		return fmt.Errorf("testguest: send %q: %w", cmd, err)
	}
	return nil
}

// Run runs rounds workload rounds and returns what the guest reported. The
// guest must be idle (after WaitReady, not looping).
func (g *Guest) Run(ctx context.Context, rounds int) (*Manifest, error) {
	if rounds <= 0 {
		return nil, fmt.Errorf("testguest: run %d rounds", rounds)
	}
	if err := g.WaitReady(ctx); err != nil {
		return nil, err
	}
	g.writeMu.Lock()
	defer g.writeMu.Unlock()
	if g.isLooping() {
		return nil, errors.New("testguest: run: guest is looping; StopLoop first")
	}
	// An earlier Run whose context ended may still be running rounds.
	if err := g.waitIdle(ctx); err != nil {
		return nil, err
	}
	s := g.subscribe()
	defer g.unsubscribe(s)
	if err := g.command(fmt.Sprintf("run %d", rounds), false); err != nil {
		return nil, err
	}
	m := &Manifest{}
	for {
		select {
		case <-ctx.Done():
			return m, fmt.Errorf("testguest: run %d: %w (after %d rounds)", rounds, ctx.Err(), len(m.Rounds))
		case <-g.exited:
			return m, fmt.Errorf("testguest: run %d: %w", rounds, g.exitError())
		case r := <-s.ch:
			switch r.Kind {
			case KindError:
				return m, fmt.Errorf("testguest: run %d: guest error %s", rounds, r.Msg)
			case KindIdle:
				// The guest was idle when we sent, so this idle is ours.
				if len(m.Rounds) != rounds {
					return m, fmt.Errorf("testguest: run %d: guest idle after %d rounds", rounds, len(m.Rounds))
				}
				if g.overflowed(s) {
					return m, errors.New("testguest: manifest records dropped (reader too slow)")
				}
				return m, nil
			default:
				m.Add(r)
			}
		}
	}
}

func (g *Guest) overflowed(s *subscription) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return s.overflow
}

// StartLoop makes the guest run rounds forever, pausing intervalMS between
// them, until StopLoop. Use Records to follow them.
func (g *Guest) StartLoop(ctx context.Context, intervalMS int) error {
	if intervalMS < 0 {
		return fmt.Errorf("testguest: loop interval %d", intervalMS)
	}
	if err := g.WaitReady(ctx); err != nil {
		return err
	}
	g.writeMu.Lock()
	defer g.writeMu.Unlock()
	if g.isLooping() {
		return errors.New("testguest: loop: guest is already looping")
	}
	if err := g.waitIdle(ctx); err != nil {
		return err
	}
	return g.command(fmt.Sprintf("loop %d", intervalMS), true)
}

// StopLoop ends a loop started by StartLoop (or by Options.LoopIntervalMS)
// and waits until the guest is idle again.
func (g *Guest) StopLoop(ctx context.Context) error {
	g.writeMu.Lock()
	defer g.writeMu.Unlock()
	if g.isLooping() {
		// "stop" is read by the loop; the loop's own idle follows.
		if err := g.send("stop"); err != nil {
			return err
		}
		g.mu.Lock()
		g.looping = false
		g.mu.Unlock()
	}
	return g.waitIdle(ctx)
}

func (g *Guest) isLooping() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.looping
}

// command sends a command that the guest answers with "VMI idle".
func (g *Guest) command(cmd string, loop bool) error {
	g.mu.Lock()
	g.pending++
	g.looping = loop
	g.mu.Unlock()
	if err := g.send(cmd); err != nil {
		g.mu.Lock()
		g.pending--
		g.looping = false
		g.mu.Unlock()
		return err
	}
	return nil
}

// waitIdle waits until every command sent has been answered.
func (g *Guest) waitIdle(ctx context.Context) error {
	if err := g.WaitReady(ctx); err != nil {
		return err
	}
	for {
		g.mu.Lock()
		n, ch := g.pending, g.idleChanged
		g.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("testguest: waiting for the guest to be idle: %w", ctx.Err())
		case <-g.exited:
			return g.exitError()
		}
	}
}

// Exited is closed when QEMU has exited.
func (g *Guest) Exited() <-chan struct{} { return g.exited }

// Kill kills QEMU with SIGKILL (for crash tests) and waits for it to exit.
// The directory is kept until Close.
func (g *Guest) Kill() {
	if g.cmd == nil || g.cmd.Process == nil {
		return
	}
	_ = g.cmd.Process.Kill()
	<-g.exited
}

// Close powers the guest off, kills QEMU if it has not exited after five
// seconds, and removes the files Boot created.
func (g *Guest) Close() error {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return nil
	}
	g.closed = true
	g.mu.Unlock()
	select {
	case <-g.exited:
	default:
		// A command may be mid-run; poweroff is read after it (or ends a loop).
		_ = g.send("poweroff")
		select {
		case <-g.exited:
		case <-time.After(5 * time.Second):
			g.log.Warn("guest did not power off; killing qemu", "pid", g.PID)
			g.Kill()
		}
	}
	_ = g.stdin.Close()
	g.cleanup()
	return nil
}

func (g *Guest) cleanup() {
	for _, p := range []string{g.QMPSocket, g.GDBSocket, g.RAMPath, g.PluginSHM} {
		if p != "" {
			_ = os.Remove(p)
		}
	}
	if g.ownDir {
		_ = os.RemoveAll(g.Dir)
	}
}

// exitError says how QEMU ended: exit status or signal, and the last lines
// of its stderr (an exit 0 with nothing on stderr says that too).
func (g *Guest) exitError() error {
	<-g.exited
	var ps *os.ProcessState
	if g.cmd != nil { // nil for the fake guests of the tests
		ps = g.cmd.ProcessState
	}
	return fmt.Errorf("testguest: %w", procerr.Error("qemu", ps, g.waitErr, g.stderr.String()))
}

// tailBuffer keeps the last 8 KiB written to it.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > 8192 {
		t.buf = append([]byte(nil), t.buf[len(t.buf)-8192:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}
