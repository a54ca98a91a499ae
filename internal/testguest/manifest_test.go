package testguest

import (
	"fmt"
	"strings"
	"testing"
)

func TestParseLine(t *testing.T) {
	tests := []struct {
		line   string
		want   Record
		ok     bool
		errSub string
	}{
		{line: "VMI spawn pid=91 ppid=1 name=vmi-round round=1", ok: true,
			want: Record{Kind: KindSpawn, PID: 91, PPID: 1, Name: "vmi-round", Round: 1}},
		{line: "VMI file path=/tmp/vmi/r1-w0-f0.dat pid=92 opens=2 writes=2 bytes=61 round=1\r", ok: true,
			want: Record{Kind: KindFile, Path: "/tmp/vmi/r1-w0-f0.dat", PID: 92, Opens: 2, Writes: 2, Bytes: 61, Round: 1}},
		{line: "VMI exit pid=94 status=3 round=1", ok: true, want: Record{Kind: KindExit, PID: 94, Status: 3, Round: 1}},
		{line: "VMI done round=7", ok: true, want: Record{Kind: KindDone, Round: 7}},
		{line: "VMI idle", ok: true, want: Record{Kind: KindIdle}},
		{line: "VMI idle\r\n", ok: true, want: Record{Kind: KindIdle}},
		{line: "VMI loop interval_ms=100", ok: true, want: Record{Kind: KindLoop, IntervalMS: 100}},
		{line: "VMI poweroff", ok: true, want: Record{Kind: KindPoweroff}},
		{line: "VMI error msg=unknown-command", ok: true, want: Record{Kind: KindError, Msg: "unknown-command"}},
		// Not manifest lines: ignored without error.
		{line: ""},
		{line: "[    5.2] Run /init as init process"},
		{line: "  VMI idle"},
		{line: "VMIidle"},
		{line: "vmi idle"},
		{line: "run 2"},
		// Malformed manifest lines.
		{line: "VMI ", ok: true, errSub: "without kind"},
		{line: "VMI bogus x=1", ok: true, errSub: "unknown kind"},
		{line: "VMI spawn pid=91 ppid=1 name=vmi-round", ok: true, errSub: "missing round"},
		{line: "VMI spawn pid=x ppid=1 name=a round=1", ok: true, errSub: "bad pid"},
		{line: "VMI spawn pid=-4 ppid=1 name=a round=1", ok: true, errSub: "bad pid"},
		{line: "VMI spawn pid=0 ppid=1 name=a round=1", ok: true, errSub: "pid is 0"},
		{line: "VMI spawn pid=99999999999999999999 ppid=1 name=a round=1", ok: true, errSub: "bad pid"},
		{line: "VMI spawn pid=1 pid=2 ppid=1 name=a round=1", ok: true, errSub: "duplicate"},
		{line: "VMI spawn pid=1 ppid=1 name= round=1", ok: true, errSub: "missing name"},
		{line: "VMI exit pid=3 status round=1", ok: true, errSub: "bad field"},
		{line: "VMI exit =3 pid=3 status=0 round=1", ok: true, errSub: "bad field"},
		{line: "VMI file path=tmp/x pid=2 opens=2 writes=2 bytes=1 round=1", ok: true, errSub: "not absolute"},
		{line: "VMI done round=1" + strings.Repeat(" ", maxLineLen), ok: true, errSub: "too long"},
	}
	for _, tt := range tests {
		got, ok, err := ParseLine(tt.line)
		if ok != tt.ok {
			t.Errorf("ParseLine(%q) ok = %v, want %v", tt.line, ok, tt.ok)
			continue
		}
		if tt.errSub != "" {
			if err == nil || !strings.Contains(err.Error(), tt.errSub) {
				t.Errorf("ParseLine(%q) err = %v, want containing %q", tt.line, err, tt.errSub)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseLine(%q) err = %v", tt.line, err)
			continue
		}
		if got != tt.want {
			t.Errorf("ParseLine(%q) = %+v, want %+v", tt.line, got, tt.want)
		}
	}
}

// roundLines returns the manifest lines of one correct round, with pids
// starting at base.
func roundLines(r, base int) []string {
	p := func(i int) int { return base + i }
	return []string{
		fmt.Sprintf("VMI spawn pid=%d ppid=1 name=vmi-round round=%d", p(0), r),
		fmt.Sprintf("VMI spawn pid=%d ppid=%d name=vmi-writer round=%d", p(1), p(0), r),
		fmt.Sprintf("VMI spawn pid=%d ppid=%d name=vmi-writer round=%d", p(2), p(0), r),
		fmt.Sprintf("VMI spawn pid=%d ppid=%d name=vmi-exiter round=%d", p(3), p(0), r),
		fmt.Sprintf("VMI spawn pid=%d ppid=%d name=vmi-writev round=%d", p(6), p(0), r),
		fmt.Sprintf("VMI file path=/tmp/vmi/r%d-v.dat pid=%d opens=2 writes=2 bytes=43 round=%d", r, p(6), r),
		fmt.Sprintf("VMI copy path=/tmp/vmi/r%d-v.dat.s pid=%d syscall=sendfile calls=1 bytes=43 round=%d", r, p(6), r),
		fmt.Sprintf("VMI copy path=/tmp/vmi/r%d-v.dat.p pid=%d syscall=splice calls=1 bytes=43 round=%d", r, p(6), r),
		fmt.Sprintf("VMI copy path=/tmp/vmi/r%d-v.dat.c pid=%d syscall=copy_file_range calls=1 bytes=43 round=%d", r, p(6), r),
		fmt.Sprintf("VMI rename old=/tmp/vmi/r%d-v.dat.c new=/tmp/vmi/r%d-v.dat.moved pid=%d round=%d", r, r, p(6), r),
		fmt.Sprintf("VMI copy path=/tmp/vmi/r%d-v.dat.u pid=%d syscall=io_uring calls=1 bytes=43 round=%d", r, p(6), r),
		fmt.Sprintf("VMI exit pid=%d status=0 round=%d", p(6), r),
		fmt.Sprintf("VMI file path=/etc/vmi-test-r%d.conf pid=%d opens=2 writes=2 bytes=42 round=%d", r, p(0), r),
		fmt.Sprintf("VMI file path=/tmp/vmi/r%d-w0-f0.dat pid=%d opens=2 writes=2 bytes=61 round=%d", r, p(1), r),
		fmt.Sprintf("VMI file path=/tmp/vmi/r%d-w0-f1.dat pid=%d opens=2 writes=2 bytes=61 round=%d", r, p(1), r),
		fmt.Sprintf("VMI file path=/tmp/vmi/r%d-w1-f0.dat pid=%d opens=2 writes=2 bytes=61 round=%d", r, p(2), r),
		fmt.Sprintf("VMI file path=/tmp/vmi/r%d-w1-f1.dat pid=%d opens=2 writes=2 bytes=61 round=%d", r, p(2), r),
		fmt.Sprintf("VMI spawn pid=%d ppid=%d name=vmi-child round=%d", p(4), p(1), r),
		fmt.Sprintf("VMI spawn pid=%d ppid=%d name=vmi-child round=%d", p(5), p(2), r),
		fmt.Sprintf("VMI file path=/tmp/vmi/r%d-w0-c.dat pid=%d opens=2 writes=2 bytes=45 round=%d", r, p(4), r),
		fmt.Sprintf("VMI file path=/tmp/vmi/r%d-w1-c.dat pid=%d opens=2 writes=2 bytes=45 round=%d", r, p(5), r),
		fmt.Sprintf("VMI exit pid=%d status=0 round=%d", p(4), r),
		fmt.Sprintf("VMI exit pid=%d status=0 round=%d", p(5), r),
		fmt.Sprintf("VMI exit pid=%d status=0 round=%d", p(1), r),
		fmt.Sprintf("VMI exit pid=%d status=0 round=%d", p(2), r),
		fmt.Sprintf("VMI exit pid=%d status=3 round=%d", p(3), r),
		fmt.Sprintf("VMI exit pid=%d status=0 round=%d", p(0), r),
		fmt.Sprintf("VMI done round=%d", r),
	}
}

func manifestOf(t *testing.T, lines []string) *Manifest {
	t.Helper()
	m := &Manifest{}
	for _, l := range lines {
		rec, ok, err := ParseLine(l)
		if err != nil {
			t.Fatalf("%q: %v", l, err)
		}
		if ok {
			m.Add(rec)
		}
	}
	return m
}

func TestManifestCheck(t *testing.T) {
	good := append(roundLines(1, 91), roundLines(2, 98)...)
	good = append(good, "kernel noise", "VMI idle")
	m := manifestOf(t, good)
	if err := m.Check(); err != nil {
		t.Fatalf("correct manifest: %v", err)
	}
	if len(m.Spawns) != 2*SpawnsPerRound || len(m.Files) != 2*FilesPerRound || len(m.Exits) != 2*ExitsPerRound {
		t.Errorf("counts %d/%d/%d", len(m.Spawns), len(m.Files), len(m.Exits))
	}
	if s, ok := m.SpawnByPID(95); !ok || s.Name != NameChild || s.PPID != 92 {
		t.Errorf("SpawnByPID(95) = %+v, %v", s, ok)
	}

	broken := []struct {
		name   string
		edit   func([]string) []string
		errSub string
	}{
		{"missing exit", func(l []string) []string { return del(l, "VMI exit pid=95 ") }, "never exited"},
		{"missing file", func(l []string) []string { return del(l, "r1-w0-f1.dat") }, "7 files"},
		{"missing writev file", func(l []string) []string { return del(l, "r1-v.dat") }, "7 files"},
		{"writev file by another process", func(l []string) []string { return repl(l, "r1-v.dat pid=97", "r1-v.dat pid=92") }, "written by vmi-writer, want vmi-writev"},
		{"vmi-writev writes a writer's file", func(l []string) []string { return repl(l, "r1-w0-f0.dat pid=92", "r1-w0-f0.dat pid=97") }, "written by vmi-writev, want vmi-writer or vmi-child"},
		{"vmi-writev not started by vmi-round", func(l []string) []string {
			return repl(l, "pid=97 ppid=91 name=vmi-writev", "pid=97 ppid=92 name=vmi-writev")
		}, "parent 92 is not a vmi-round"},
		{"etc file by another process", func(l []string) []string { return repl(l, "vmi-test-r1.conf pid=91", "vmi-test-r1.conf pid=92") }, "written by vmi-writer, want vmi-round"},
		{"missing etc file", func(l []string) []string { return del(l, "vmi-test-r2.conf") }, "7 files"},
		{"missing done", func(l []string) []string { return del(l, "VMI done round=1") }, "did not finish"},
		{"wrong parent", func(l []string) []string {
			return repl(l, "pid=95 ppid=92 name=vmi-child", "pid=95 ppid=91 name=vmi-child")
		}, "parent 91"},
		{"unknown writer", func(l []string) []string { return repl(l, "w0-c.dat pid=95", "w0-c.dat pid=555") }, "unknown pid 555"},
		{"wrong status", func(l []string) []string { return repl(l, "pid=94 status=3", "pid=94 status=0") }, "status 0, want 3"},
		{"duplicate file", func(l []string) []string {
			return repl(l, "r1-w0-f1.dat", "r1-w0-f0.dat")
		}, "reported twice"},
		{"wrong write count", func(l []string) []string {
			return repl(l, "r1-w1-c.dat pid=96 opens=2 writes=2", "r1-w1-c.dat pid=96 opens=2 writes=1")
		}, "writes=1"},
		{"unexpected name", func(l []string) []string { return repl(l, "name=vmi-exiter", "name=sh") }, "unexpected process name"},
	}
	for _, b := range broken {
		lines := b.edit(append([]string(nil), good...))
		err := manifestOf(t, lines).Check()
		if err == nil || !strings.Contains(err.Error(), b.errSub) {
			t.Errorf("%s: Check() = %v, want containing %q", b.name, err, b.errSub)
		}
	}
}

func del(lines []string, sub string) []string {
	var out []string
	for _, l := range lines {
		if !strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return out
}

func repl(lines []string, old, new string) []string {
	for i, l := range lines {
		lines[i] = strings.Replace(l, old, new, 1)
	}
	return lines
}

// FuzzParseLine: the console is guest-controlled; parsing must not panic
// and accepted records must be self-consistent.
func FuzzParseLine(f *testing.F) {
	for _, l := range roundLines(1, 91) {
		f.Add(l)
	}
	f.Add("VMI idle\r")
	f.Add("VMI loop interval_ms=100")
	f.Add("VMI error msg=x")
	f.Add("VMI spawn pid=1 pid=1")
	f.Add("garbage")
	f.Fuzz(func(t *testing.T, line string) {
		rec, ok, err := ParseLine(line)
		if !ok && err != nil {
			t.Fatalf("non-manifest line with error %v", err)
		}
		if !ok || err != nil {
			return
		}
		if !strings.HasPrefix(line, ManifestPrefix) {
			t.Fatalf("accepted %q without prefix", line)
		}
		switch rec.Kind {
		case KindSpawn, KindFile, KindCopy, KindRename, KindExit:
			if rec.PID <= 0 {
				t.Fatalf("accepted pid %d", rec.PID)
			}
		}
		var m Manifest
		m.Add(rec)
		_ = m.Check()
	})
}

// BenchmarkParseLine measures parsing one typical manifest line.
func BenchmarkParseLine(b *testing.B) {
	line := "VMI file path=/tmp/vmi/r12-w0-f1.dat pid=1234 opens=2 writes=2 bytes=63 round=12"
	b.ReportAllocs()
	for b.Loop() {
		if _, ok, err := ParseLine(line); !ok || err != nil {
			b.Fatal(err)
		}
	}
}
