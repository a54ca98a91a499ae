package testguest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fakeInit emulates the guest's /init protocol over pipes, so the host side
// of Guest (Run, loops, idle accounting) is tested without QEMU. Rounds are
// printed with roundLines, with garbage mixed in as a real console could.
type fakeInit struct {
	round int
	pid   int
	delay time.Duration // per round, to let contexts expire mid-run
}

func (f *fakeInit) serve(r io.Reader, w io.WriteCloser) {
	defer w.Close()
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	say := func(s string) { fmt.Fprint(w, s+"\r\n") }
	doRound := func() {
		f.round++
		f.pid += 10
		time.Sleep(f.delay)
		for _, l := range roundLines(f.round, f.pid) {
			say(l)
		}
		say("[  12.3] random kernel noise")
	}
	say("VMI idle")
	for line := range lines {
		cmd, arg, _ := strings.Cut(line, " ")
		n, _ := strconv.Atoi(arg)
		switch cmd {
		case "run":
			for range n {
				doRound()
			}
		case "loop":
			say("VMI loop interval_ms=" + arg)
		loop:
			for {
				doRound()
				select {
				case l := <-lines:
					switch l {
					case "stop":
						break loop
					case "poweroff":
						say("VMI poweroff")
						return
					}
				case <-time.After(time.Duration(n) * time.Millisecond):
				}
			}
		case "poweroff":
			say("VMI poweroff")
			return
		case "ping", "stop", "":
		default:
			say("VMI error msg=unknown-command")
		}
		say("VMI idle")
	}
}

// newFakeGuest returns a Guest wired to a fakeInit instead of QEMU.
func newFakeGuest(t *testing.T, f *fakeInit) *Guest {
	t.Helper()
	g := &Guest{
		log:         slog.New(slog.NewTextHandler(t.Output(), nil)),
		exited:      make(chan struct{}),
		ready:       make(chan struct{}),
		subs:        map[*subscription]struct{}{},
		idleChanged: make(chan struct{}),
		Started:     time.Now(),
	}
	hostR, guestW := io.Pipe()
	guestR, hostW := io.Pipe()
	g.stdin = hostW
	go g.readConsole(hostR)
	go func() {
		f.serve(guestR, guestW)
		guestR.Close()
		close(g.exited)
	}()
	t.Cleanup(func() { g.Close() })
	return g
}

// TestFakeRunAfterReady repeats boot-then-run many times: the boot's idle
// must never be taken as the answer to the first run.
func TestFakeRunAfterReady(t *testing.T) {
	ctx := context.Background()
	for i := range 300 {
		g := newFakeGuest(t, &fakeInit{pid: 100})
		if err := g.WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
		m, err := g.Run(ctx, 2)
		if err != nil {
			t.Fatalf("iteration %d: %v", i, err)
		}
		if err := m.Check(); err != nil || len(m.Rounds) != 2 {
			t.Fatalf("iteration %d: rounds %v: %v", i, m.Rounds, err)
		}
		g.Close()
	}
}

func TestFakeProtocol(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	f := &fakeInit{pid: 100}
	g := newFakeGuest(t, f)

	// A run whose context ends early: the guest goes on; the next run waits
	// for it and then gets only its own rounds.
	f.delay = 20 * time.Millisecond
	short, scancel := context.WithTimeout(ctx, 5*time.Millisecond)
	if _, err := g.Run(short, 5); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("cancelled run: err = %v", err)
	}
	scancel()
	m, err := g.Run(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Rounds) != 1 || m.Rounds[0] != 6 {
		t.Errorf("run after a cancelled run: rounds %v, want [6]", m.Rounds)
	}
	f.delay = 0

	// Loop, follow, stop; a run while looping is refused.
	lctx, lcancel := context.WithCancel(ctx)
	recs := g.Records(lctx)
	if err := g.StartLoop(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Run(ctx, 1); err == nil {
		t.Error("Run while looping succeeded")
	}
	if err := g.StartLoop(ctx, 1); err == nil {
		t.Error("second StartLoop succeeded")
	}
	var loop Manifest
	for r := range recs {
		loop.Add(r)
		if len(loop.Rounds) == 3 {
			break
		}
	}
	lcancel()
	if err := loop.Check(); err != nil {
		t.Errorf("loop records: %v", err)
	}
	if err := g.StopLoop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := g.StopLoop(ctx); err != nil { // not looping: a no-op
		t.Fatal(err)
	}
	m, err = g.Run(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Check(); err != nil || len(m.Rounds) != 3 {
		t.Errorf("run after loop: rounds %v: %v", m.Rounds, err)
	}
	if n := g.BadLines(); n != 0 {
		t.Errorf("BadLines = %d", n)
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-g.Exited():
	case <-time.After(10 * time.Second):
		t.Fatal("fake guest did not power off")
	}
	if _, err := g.Run(ctx, 1); err == nil {
		t.Error("Run after Close succeeded")
	}
}

func TestReadLineBounds(t *testing.T) {
	long := strings.Repeat("x", 3*maxLineLen)
	br := bufio.NewReaderSize(strings.NewReader(long+"\nVMI idle\r\n"), 16)
	l, err := readLine(br, maxLineLen)
	if err != nil || len(l) != maxLineLen+1 {
		t.Errorf("long line: len %d err %v", len(l), err)
	}
	l, err = readLine(br, maxLineLen)
	if err != nil || l != "VMI idle" {
		t.Errorf("next line = %q, %v", l, err)
	}
	// A line cut off by EOF comes with the error: readConsole drops it.
	l, err = readLine(bufio.NewReader(strings.NewReader("VMI fi")), maxLineLen)
	if err == nil || l != "VMI fi" {
		t.Errorf("cut line = %q, %v; want it with an error", l, err)
	}
}
