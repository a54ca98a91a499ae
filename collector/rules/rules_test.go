package rules

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vmi-exporter/vmi-exporter/collector"
)

var (
	linuxGuest   = &collector.Guest{Domain: "lin", OS: OSLinux}
	windowsGuest = &collector.Guest{Domain: "win", OS: OSWindows}
)

func write(g *collector.Guest, proc, path string) *collector.Event {
	return &collector.Event{Kind: collector.KindFileWrite, Guest: g, Path: path, Process: collector.Process{PID: 100, Name: proc}}
}

func defaultEngine(t testing.TB) *Engine {
	t.Helper()
	e, err := New(Defaults(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestGlob(t *testing.T) {
	for _, c := range []struct {
		pat, path  string
		fold, want bool
	}{
		{"/etc/**", "/etc/passwd", false, true},
		{"/etc/**", "/etc/a/b/c", false, true},
		{"/etc/**", "/etcx/passwd", false, false},
		{"/etc/**", "/usr/etc/passwd", false, false},
		{"/etc/*", "/etc/a/b", false, false},
		{"/etc/*", "/etc/ab", false, true},
		{"/etc/?", "/etc/a", false, true},
		{"/etc/?", "/etc/ab", false, false},
		{"/etc/?", "/etc//", false, false},
		{"/a/**/b", "/a/b", false, true},
		{"/a/**/b", "/a/x/y/b", false, true},
		{"/a/**/b", "/a/xb", false, false},
		{"**/.ssh/**", "/root/.ssh/authorized_keys", false, true},
		{"/home/*/.ssh/**", "/home/bob/.ssh/authorized_keys", false, true},
		{"/home/*/.ssh/**", "/home/bob/x/.ssh/authorized_keys", false, false},
		{"/etc/cron*/**", "/etc/cron.daily/job", false, true},
		{"/etc/cron*/**", "/etc/crontab", false, false},
		{"/etc/ld.so.preload", "/etc/ld.so.preload", false, true},
		{"/etc/ld.so.preload", "/etc/ld.so.preload2", false, false},
		{"/etc/ld.so.preload", "/etc/ld.so.preloa", false, false},
		{"/Windows/System32/**", `\WINDOWS\system32\drivers\x.sys`, true, true},
		{"/Windows/System32/**", `\WINDOWS\system32\drivers\x.sys`, false, false},
		{`\Windows\*.exe`, "/windows/notepad.EXE", true, true},
		{"*a*a*a*a*a*b", strings.Repeat("a", 5000), false, false},
		{"**a**a**a**a**b", strings.Repeat("a", 5000), false, false},
	} {
		g, err := compileGlob(c.pat, c.fold)
		if err != nil {
			t.Fatal(err)
		}
		if got := g.match("", c.path); got != c.want {
			t.Errorf("%q (fold %v) on %.40q: %v, want %v", c.pat, c.fold, c.path, got, c.want)
		}
	}
	if _, err := compileGlob(strings.Repeat("x", maxStates), false); err == nil {
		t.Error("overlong pattern accepted")
	}
	if _, err := compileGlob("", false); err == nil {
		t.Error("empty pattern accepted")
	}
}

func TestNormalize(t *testing.T) {
	for in, want := range map[string]string{
		`\Device\HarddiskVolume2\Windows\System32\x.dll`: `\Windows\System32\x.dll`,
		`\device\harddiskvolume3\Users\a`:                `\Users\a`,
		`\Device\HarddiskVolume2`:                        `\`,
		`\??\C:\Windows\Tasks\t.job`:                     `\Windows\Tasks\t.job`,
		`\\?\D:\x`:                                       `\x`,
		`C:\Windows\x`:                                   `\Windows\x`,
		`c:/windows/x`:                                   `/windows/x`,
		`\SystemRoot\System32\x`:                         `\Windows\System32\x`,
		`\Windows\x`:                                     `\Windows\x`,
		``:                                               ``,
		`C`:                                              `C`,
	} {
		h, tl := normalize(in, OSWindows)
		if h+tl != want {
			t.Errorf("normalize(%q) = %q, want %q", in, h+tl, want)
		}
	}
	if h, tl := normalize(`C:\x`, OSLinux); h+tl != `C:\x` {
		t.Errorf("linux path changed: %q", h+tl)
	}
}

// TestDefaultRules checks that each default rule fires on what it is for
// and stays quiet on near misses.
func TestDefaultRules(t *testing.T) {
	e := defaultEngine(t)
	type tc struct {
		g          *collector.Guest
		proc, path string
	}
	cases := map[string]struct{ fire, quiet []tc }{
		"windows-system32": {
			fire: []tc{
				{windowsGuest, "evil.exe", `\Device\HarddiskVolume2\Windows\System32\drivers\evil.sys`},
				{windowsGuest, "evil.exe", `\??\C:\WINDOWS\SysWOW64\x.dll`},
				{windowsGuest, "evil.exe", `C:\Windows\System32\x.dll`},
			},
			quiet: []tc{
				{windowsGuest, "TiWorker.exe", `\Device\HarddiskVolume2\Windows\System32\x.dll`},
				{windowsGuest, "svchost.exe", `\Device\HarddiskVolume2\Windows\System32\winevt\Logs\System.evtx`},
				{windowsGuest, "System", `\Device\HarddiskVolume2\Windows\System32\config\SOFTWARE`},
				{windowsGuest, "evil.exe", `\Device\HarddiskVolume2\Windows\Temp\x.dll`},
				{windowsGuest, "evil.exe", `\Device\HarddiskVolume2\Users\a\System32\x.dll`},
				{linuxGuest, "evil", `/Windows/System32/x.dll`},
			},
		},
		"windows-scheduled-tasks": {
			fire: []tc{
				{windowsGuest, "schtasks.exe", `\Device\HarddiskVolume2\Windows\System32\Tasks\Updater`},
				{windowsGuest, "evil.exe", `\Device\HarddiskVolume1\Windows\Tasks\at1.job`},
			},
			quiet: []tc{
				{windowsGuest, "evil.exe", `\Device\HarddiskVolume1\Windows\TasksX\a`},
				{windowsGuest, "evil.exe", `\Device\HarddiskVolume1\Windows\System32\Task`},
			},
		},
		"windows-startup-folder": {
			fire: []tc{
				{windowsGuest, "evil.exe", `\Device\HarddiskVolume2\ProgramData\Microsoft\Windows\Start Menu\Programs\Startup\run.lnk`},
				{windowsGuest, "evil.exe", `\Device\HarddiskVolume2\Users\alice\AppData\Roaming\Microsoft\Windows\Start Menu\Programs\StartUp\x.bat`},
			},
			quiet: []tc{
				{windowsGuest, "explorer.exe", `\Device\HarddiskVolume2\Users\alice\AppData\Roaming\Microsoft\Windows\Start Menu\Programs\Accessories\x.lnk`},
				{windowsGuest, "evil.exe", `\Device\HarddiskVolume2\Users\alice\Desktop\Startup\x.bat`},
			},
		},
		"linux-etc": {
			fire:  []tc{{linuxGuest, "sh", "/etc/passwd"}, {linuxGuest, "vmi-round", "/etc/vmi-test-r1.conf"}, {linuxGuest, "sh", "/etc/sudoers.d/x"}},
			quiet: []tc{{linuxGuest, "sh", "/tmp/etc/passwd"}, {linuxGuest, "dhclient", "/etc/resolv.conf"}, {linuxGuest, "sh", "/etc/ld.so.preload"}, {windowsGuest, "x.exe", `C:\etc\passwd`}},
		},
		"linux-system-binaries": {
			fire:  []tc{{linuxGuest, "curl", "/usr/bin/sshd"}, {linuxGuest, "sh", "/usr/lib/x86_64-linux-gnu/libc.so.6"}, {linuxGuest, "sh", "/sbin/init"}},
			quiet: []tc{{linuxGuest, "dpkg", "/usr/bin/ls"}, {linuxGuest, "sh", "/usr/local/share/x"}, {linuxGuest, "sh", "/usr/lib/systemd/system/x.service"}},
		},
		"linux-ssh-keys": {
			fire:  []tc{{linuxGuest, "sh", "/root/.ssh/authorized_keys"}, {linuxGuest, "sh", "/home/bob/.ssh/id_ed25519"}},
			quiet: []tc{{linuxGuest, "sh", "/home/bob/ssh/x"}, {linuxGuest, "sh", "/home/.ssh/x"}},
		},
		"linux-cron": {
			fire:  []tc{{linuxGuest, "crontab", "/var/spool/cron/crontabs/root"}, {linuxGuest, "sh", "/etc/cron.d/job"}, {linuxGuest, "sh", "/etc/crontab"}},
			quiet: []tc{{linuxGuest, "sh", "/var/spool/mail/root"}, {linuxGuest, "sh", "/etc/crontab.bak"}},
		},
		"linux-systemd-units": {
			fire:  []tc{{linuxGuest, "sh", "/etc/systemd/system/evil.service"}, {linuxGuest, "sh", "/home/bob/.config/systemd/user/x.service"}, {linuxGuest, "sh", "/usr/lib/systemd/system/y.timer"}},
			quiet: []tc{{linuxGuest, "sh", "/home/bob/.config/other/x.service"}, {linuxGuest, "sh", "/run/systemd/journal/x"}},
		},
		// A burst rule of renames (TestRenameBurst): writes never fire it.
		"rename-burst-unusual-extension": {
			quiet: []tc{{linuxGuest, "sh", "/home/a/x.locked"}},
		},
		"linux-ld-preload": {
			fire:  []tc{{linuxGuest, "sh", "/etc/ld.so.preload"}},
			quiet: []tc{{linuxGuest, "sh", "/etc/ld.so.conf"}, {linuxGuest, "sh", "/etc/ld.so.preload.d/x"}},
		},
	}
	for _, c := range Defaults() {
		if _, ok := cases[c.Name]; !ok {
			t.Errorf("default rule %s has no test", c.Name)
		}
		if c.Description == "" {
			t.Errorf("default rule %s has no description", c.Name)
		}
	}
	for name, c := range cases {
		for _, f := range c.fire {
			if got := e.Match(write(f.g, f.proc, f.path)); !slices.Contains(got, name) {
				t.Errorf("%s: %s writing %s on %s: rules %v, want it", name, f.proc, f.path, f.g.OS, got)
			}
		}
		for _, q := range c.quiet {
			if got := e.Match(write(q.g, q.proc, q.path)); slices.Contains(got, name) {
				t.Errorf("%s: %s writing %s on %s: fired", name, q.proc, q.path, q.g.OS)
			}
		}
	}
}

func TestKinds(t *testing.T) {
	e := defaultEngine(t)
	ev := write(linuxGuest, "sh", "/etc/passwd")
	ev.Kind = collector.KindFileCreate
	if got := e.Match(ev); got != nil {
		t.Errorf("file.create matched write-only rules: %v", got)
	}
	ev = write(windowsGuest, "evil.exe", `C:\ProgramData\Microsoft\Windows\Start Menu\Programs\Startup\x.lnk`)
	ev.Kind = collector.KindFileCreate
	if got := e.Match(ev); !slices.Equal(got, []string{"windows-startup-folder"}) {
		t.Errorf("startup create: %v", got)
	}
	ev.Kind = collector.KindProcessStart
	if got := e.Match(ev); got != nil {
		t.Errorf("process.start matched: %v", got)
	}
}

func TestSeveralRules(t *testing.T) {
	e, err := New([]Config{
		{Name: "a", Paths: []string{"/x/**"}},
		{Name: "b", Paths: []string{"/x/y"}},
	}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	got := e.Match(write(linuxGuest, "p", "/x/y"))
	if !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("got %v", got)
	}
	// The first rule's own slice is not modified by the second hit.
	if got := e.Match(write(linuxGuest, "p", "/x/z")); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("got %v", got)
	}
}

func TestProcesses(t *testing.T) {
	e, err := New([]Config{
		{Name: "shells", OS: OSAny, Processes: []string{"*sh", "powershell.exe"}, ExcludeProcesses: []string{"ssh"}, Paths: []string{"/data/**"}},
	}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		g          *collector.Guest
		proc, path string
		want       bool
	}{
		{linuxGuest, "bash", "/data/x", true},
		{linuxGuest, "ssh", "/data/x", false},
		{linuxGuest, "python", "/data/x", false},
		{linuxGuest, "bash", "/other/x", false},
		{windowsGuest, "PowerShell.EXE", `\Device\HarddiskVolume4\data\x`, true},
	} {
		if got := len(e.Match(write(c.g, c.proc, c.path))) > 0; got != c.want {
			t.Errorf("%s %s: %v, want %v", c.proc, c.path, got, c.want)
		}
	}
}

func TestFirstWriteByNewProcess(t *testing.T) {
	e, err := New([]Config{{Name: "first", FirstWriteByNewProcess: true, Paths: []string{"/tmp/**"}}}, Options{MaxProcesses: 2})
	if err != nil {
		t.Fatal(err)
	}
	ev := func(k collector.Kind, dom *collector.Guest, pid uint64, path string) *collector.Event {
		return &collector.Event{Kind: k, Guest: dom, Path: path, Process: collector.Process{PID: pid}}
	}
	// A process not seen starting does not count as new.
	if got := e.Match(ev(collector.KindFileWrite, linuxGuest, 7, "/tmp/a")); got != nil {
		t.Errorf("unknown process: %v", got)
	}
	e.Match(ev(collector.KindProcessStart, linuxGuest, 7, ""))
	// Same pid in another guest is another process.
	if got := e.Match(ev(collector.KindFileWrite, windowsGuest, 7, "/tmp/a")); got != nil {
		t.Errorf("other domain: %v", got)
	}
	// First write outside the rule's paths still uses up "first".
	e.Match(ev(collector.KindProcessStart, linuxGuest, 8, ""))
	if got := e.Match(ev(collector.KindFileWrite, linuxGuest, 8, "/var/a")); got != nil {
		t.Errorf("path miss: %v", got)
	}
	if got := e.Match(ev(collector.KindFileWrite, linuxGuest, 8, "/tmp/a")); got != nil {
		t.Errorf("second write of 8: %v", got)
	}
	if got := e.Match(ev(collector.KindFileWrite, linuxGuest, 7, "/tmp/a")); !slices.Equal(got, []string{"first"}) {
		t.Errorf("first write: %v", got)
	}
	if got := e.Match(ev(collector.KindFileWrite, linuxGuest, 7, "/tmp/b")); got != nil {
		t.Errorf("second write: %v", got)
	}
	// Exit forgets; the table is bounded (2): the oldest start is evicted.
	e.Match(ev(collector.KindProcessStart, linuxGuest, 9, ""))
	e.Match(ev(collector.KindProcessExit, linuxGuest, 9, ""))
	for pid := uint64(10); pid < 20; pid++ {
		e.Match(ev(collector.KindProcessStart, linuxGuest, pid, ""))
	}
	if n := e.procs.Len(); n != 2 {
		t.Errorf("table holds %d, want 2", n)
	}
	if got := e.Match(ev(collector.KindFileWrite, linuxGuest, 10, "/tmp/a")); got != nil {
		t.Errorf("evicted pid matched: %v", got)
	}
	if got := e.Match(ev(collector.KindFileWrite, linuxGuest, 19, "/tmp/a")); got == nil {
		t.Error("newest pid did not match")
	}
	// pid reuse: started twice, one slot.
	e.Match(ev(collector.KindProcessStart, linuxGuest, 30, ""))
	e.Match(ev(collector.KindProcessStart, linuxGuest, 30, ""))
	if n := e.procs.Len(); n != 1 {
		t.Errorf("table holds %d after reuse, want 1", n)
	}
	if got := e.Match(ev(collector.KindFileWrite, linuxGuest, 30, "/tmp/a")); got == nil {
		t.Error("reused pid did not match")
	}
}

func TestConfigErrors(t *testing.T) {
	for _, c := range []Config{
		{Name: "", Paths: []string{"/x"}},
		{Name: "bad name", Paths: []string{"/x"}},
		{Name: "a", OS: "bsd", Paths: []string{"/x"}},
		{Name: "a", Kinds: []string{"process.start"}, Paths: []string{"/x"}},
		{Name: "a", Kinds: []string{"nope"}, Paths: []string{"/x"}},
		{Name: "a", Severity: "panic", Paths: []string{"/x"}},
		{Name: "a"},
		{Name: "a", Paths: []string{""}},
	} {
		if _, err := New([]Config{c}, Options{}); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
	if _, err := New([]Config{{Name: "a", Paths: []string{"/x"}}, {Name: "a", Paths: []string{"/y"}}}, Options{}); err == nil {
		t.Error("duplicate names accepted")
	}
}

func TestDecodeMerge(t *testing.T) {
	off := false
	_ = off
	user, err := Decode([]map[string]any{
		{"name": "linux-etc", "enabled": false},
		{"name": "linux-ssh-keys", "os": "linux", "paths": []any{"/root/.ssh/authorized_keys"}, "severity": "info"},
		{"name": "mine", "paths": []any{"/srv/**"}, "kinds": []any{"file.create"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	cs := Merge(Defaults(), user)
	e, err := New(cs, Options{})
	if err != nil {
		t.Fatal(err)
	}
	names := []string{}
	for _, c := range e.Rules() {
		names = append(names, c.Name)
	}
	if slices.Contains(names, "linux-etc") || !slices.Contains(names, "mine") || names[len(names)-1] != "mine" {
		t.Errorf("merged rules %v", names)
	}
	if got := e.Match(write(linuxGuest, "sh", "/root/.ssh/id_rsa")); got != nil {
		t.Errorf("overridden rule kept default paths: %v", got)
	}
	if _, err := Decode([]map[string]any{{"name": "x", "pathz": []any{"/a"}}}); err == nil {
		t.Error("unknown key accepted")
	}
	if cs, err := Decode(nil); cs != nil || err != nil {
		t.Errorf("Decode(nil) = %v, %v", cs, err)
	}
}

func TestMatchAllocs(t *testing.T) {
	e := defaultEngine(t)
	miss := write(linuxGuest, "vmi-writer", "/tmp/vmi/r1-w0-f0.dat")
	winMiss := write(windowsGuest, "notepad.exe", `\Device\HarddiskVolume2\Users\a\Documents\x.txt`)
	hit := write(linuxGuest, "sh", "/etc/passwd")
	start := &collector.Event{Kind: collector.KindProcessStart, Guest: linuxGuest}
	for name, ev := range map[string]*collector.Event{"miss": miss, "windows miss": winMiss, "hit": hit, "start": start} {
		if n := testing.AllocsPerRun(100, func() { e.Match(ev) }); n != 0 {
			t.Errorf("%s: %v allocations per Match", name, n)
		}
	}
}

func BenchmarkMatch(b *testing.B) {
	e := defaultEngine(b)
	for _, c := range []struct {
		name string
		ev   *collector.Event
	}{
		{"linux-miss", write(linuxGuest, "vmi-writer", "/tmp/vmi/r1-w0-f0.dat")},
		{"linux-hit", write(linuxGuest, "vmi-round", "/etc/vmi-test-r1.conf")},
		{"windows-miss", write(windowsGuest, "notepad.exe", `\Device\HarddiskVolume2\Users\alice\Documents\report.txt`)},
		{"windows-hit", write(windowsGuest, "evil.exe", `\Device\HarddiskVolume2\Windows\System32\drivers\evil.sys`)},
		{"process-start", &collector.Event{Kind: collector.KindProcessStart, Guest: linuxGuest}},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				e.Match(c.ev)
			}
		})
	}
}

// FuzzMatch runs the default rules and a first-write rule over arbitrary
// guest paths and names: no panic, and a path match is the same whichever
// separator the guest used.
func FuzzMatch(f *testing.F) {
	f.Add(`\Device\HarddiskVolume2\Windows\System32\x`, "evil.exe", true)
	f.Add("/etc/passwd", "sh", false)
	f.Add(`\??\C:`, "", true)
	f.Add(`\SystemRoot\`, "a", true)
	f.Add("/etc/**/x", "*", false)
	cs := append(Defaults(), Config{Name: "first", FirstWriteByNewProcess: true})
	e, err := New(cs, Options{MaxProcesses: 8})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, path, proc string, windows bool) {
		g := linuxGuest
		if windows {
			g = windowsGuest
		}
		e.Match(&collector.Event{Kind: collector.KindProcessStart, Guest: g, Process: collector.Process{PID: 1}})
		e.Match(&collector.Event{Kind: collector.KindFileWrite, Guest: g, Path: path, Process: collector.Process{PID: 1, Name: proc}})
		if windows {
			a := e.Match(write(g, proc, path))
			b := e.Match(write(g, proc, strings.ReplaceAll(path, `\`, "/")))
			if !slices.Equal(a, b) && !strings.HasPrefix(path, `\\`) {
				t.Errorf("%q: %v with '\\', %v with '/'", path, a, b)
			}
		}
	})
}

// A path far over the cap costs what the capped form costs, and is
// matched on that form: a rule on its start still hits.
func TestMatchCappedPath(t *testing.T) {
	e, err := New(Defaults(), Options{MaxMatchLen: 4096})
	if err != nil {
		t.Fatal(err)
	}
	huge := "/etc/" + strings.Repeat("a/", 512<<10) // 1 MB
	ev := &collector.Event{Kind: collector.KindFileWrite, Guest: &collector.Guest{OS: OSLinux}, Path: huge,
		Process: collector.Process{Name: strings.Repeat("x", 1<<20)}}
	start := time.Now()
	const n = 20
	var hits []string
	for range n {
		hits = e.Match(ev)
	}
	if d := time.Since(start) / n; d > 5*time.Millisecond {
		t.Errorf("a 1 MB path costs %v per match (capped form: well under 1ms)", d)
	}
	if !slices.Contains(hits, "linux-etc") {
		t.Errorf("capped path not matched on its start: %v", hits)
	}
}

// TestRenameBurst: the default rename-burst rule fires from the 20th
// rename to an unusual extension by one process within a minute, for
// that process only; common extensions and renames spread over more than
// a window do not count.
func TestRenameBurst(t *testing.T) {
	const name = "rename-burst-unusual-extension"
	e := defaultEngine(t)
	t0 := time.Unix(1000, 0)
	rename := func(pid uint64, path string, at time.Duration) []string {
		return e.Match(&collector.Event{Kind: collector.KindFileRename, Guest: linuxGuest, Time: t0.Add(at),
			Path: path, OldPath: strings.TrimSuffix(path, ".locked"), Process: collector.Process{PID: pid, Name: "enc"}})
	}
	for i := range 19 {
		if got := rename(7, fmt.Sprintf("/home/a/f%d.locked", i), time.Duration(i)*time.Second); slices.Contains(got, name) {
			t.Fatalf("rename %d fired", i+1)
		}
		if got := rename(8, fmt.Sprintf("/home/a/g%d.txt", i), 0); slices.Contains(got, name) {
			t.Fatalf("rename to .txt fired")
		}
		rename(8, fmt.Sprintf("/home/a/g%d.txt", i), 0)
	}
	for i := 19; i < 22; i++ {
		if got := rename(7, fmt.Sprintf("/home/a/f%d.locked", i), 30*time.Second); !slices.Contains(got, name) {
			t.Errorf("rename %d: rules %v, want %s", i+1, got, name)
		}
	}
	if got := rename(9, "/home/a/h.locked", 30*time.Second); slices.Contains(got, name) {
		t.Errorf("another process's first rename fired")
	}
	// A new window for pid 7 after a quiet minute.
	if got := rename(7, "/home/a/late.locked", 2*time.Minute); slices.Contains(got, name) {
		t.Errorf("rename after the window fired")
	}
	if _, err := New([]Config{{Name: "x", Kinds: []string{"file.rename"}, Paths: []string{"**"}, Threshold: -1}}, Options{}); err == nil {
		t.Error("negative threshold accepted")
	}
}

// TestBurstTableBounded: the burst table never holds more than its bound.
func TestBurstTableBounded(t *testing.T) {
	b := newBurstTable(4, 2, time.Minute)
	t0 := time.Unix(0, 0)
	for pid := range uint64(100) {
		b.hit("d", pid, t0.Add(time.Duration(pid)*time.Millisecond))
		if len(b.m) > 4 {
			t.Fatalf("%d entries", len(b.m))
		}
	}
	if !b.hit("d", 99, t0.Add(time.Second)) {
		t.Error("second hit of the newest process did not reach the threshold")
	}
}
