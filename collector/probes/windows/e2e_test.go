package windows_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
	"unicode/utf16"

	"github.com/vmi-exporter/vmi-exporter/collector"
	probes "github.com/vmi-exporter/vmi-exporter/collector/probes/windows"
	"github.com/vmi-exporter/vmi-exporter/internal/wintest"
	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver/sim"
	"github.com/vmi-exporter/vmi-exporter/introspect/hook"
	oswin "github.com/vmi-exporter/vmi-exporter/introspect/os/windows"
	"github.com/vmi-exporter/vmi-exporter/introspect/paging"
	"github.com/vmi-exporter/vmi-exporter/introspect/profile"
)

// world is a synthetic Windows guest with processes, files, handles and
// OBJECT_ATTRIBUTES, built from one profile.
type world struct {
	g                                 *wintest.Guest
	explorer, notepad, cmd, child     *wintest.Process
	file, dir, kfile, event           introspect.Va
	oa, oaAbs                         introspect.Va
	fileName, kfileName, oaName, absN string
}

const (
	hFile   = 0x44
	hDir    = 0x48
	hEvent  = 0x4c
	hLevel2 = (2*256*512 + 256 + 9) * 4
	hKernel = 0xffffffff80000124
)

func newWorld(t testing.TB, name string, vcpus int) *world {
	return newWorldSeed(t, name, vcpus, 7, 0)
}

func newWorldSeed(t testing.TB, name string, vcpus int, seed uint64, latency float64) *world {
	t.Helper()
	isf, err := wintest.LoadProfile(name)
	if err != nil {
		t.Fatal(err)
	}
	g, err := wintest.New(isf, wintest.Options{VCPUs: vcpus, Seed: seed, Latency: latency})
	if err != nil {
		t.Fatal(err)
	}
	w := &world{g: g}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	w.explorer, err = g.NewProcess("explorer.exe", 1234, g.System, 0)
	must(err)
	w.notepad, err = g.NewProcess("notepad.exe", 4242, w.explorer, 1)
	must(err)
	w.cmd, err = g.NewProcess("cmd.exe", 5000, w.explorer, 2)
	must(err)
	w.child, err = g.NewProcess("conhost.exe", 5004, w.cmd, 0)
	must(err)
	w.file, err = g.NewFile(`\Users\test\Documents\a.txt`)
	must(err)
	w.dir, err = g.NewFile(`\Users\test`)
	must(err)
	w.kfile, err = g.NewFile(`\Windows\System32\config\SYSTEM`)
	must(err)
	w.event, err = g.NewObject("Event", 0x18, "", 0, false)
	must(err)
	for _, p := range []*wintest.Process{w.notepad, w.cmd} {
		must(g.SetHandle(p, hFile, w.file))
		must(g.SetHandle(p, hDir, w.dir))
		must(g.SetHandle(p, hEvent, w.event))
	}
	must(g.SetHandle(w.cmd, hLevel2, w.file))
	must(g.SetHandle(w.notepad, hKernel, w.kfile))
	w.oa, _, err = g.ObjectAttributes(w.notepad, hDir, `Desktop\new.txt`)
	must(err)
	w.oaAbs, _, err = g.ObjectAttributes(w.cmd, 0, `\??\C:\temp\x.log`)
	must(err)
	w.fileName = g.VolumePath + `\Users\test\Documents\a.txt`
	w.kfileName = g.VolumePath + `\Windows\System32\config\SYSTEM`
	w.oaName = g.VolumePath + `\Users\test\Desktop\new.txt`
	w.absN = `\??\C:\temp\x.log`
	return w
}

func proc(p *wintest.Process) collector.Process {
	return collector.Process{PID: p.PID, PPID: p.PPID, Name: p.Name, ImageBase: uint64(p.ImageBase), PEB: uint64(p.PEB)}
}

// store returns a symbol store holding the guest's profile: the shared
// profiles directory, or a temporary store with the Win7 fragment.
func store(t testing.TB, name string) *profile.SymbolStore {
	t.Helper()
	if name != "win7" {
		dir, err := wintest.ProfileDir()
		if err != nil {
			t.Fatal(err)
		}
		return &profile.SymbolStore{Dir: dir}
	}
	isf, err := wintest.LoadProfile(name)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	w := isf.Metadata.Windows
	raw, err := os.ReadFile(filepath.Join("..", "..", "..", "internal", "wintest", "testdata", "win7sp1-fragment.json"))
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, w.Database, fmt.Sprintf("%s-%d.json", w.GUID, w.Age))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	return &profile.SymbolStore{Dir: dir}
}

// attacher attaches the collector to the sim guest once, with the Views
// engine and the Windows probes found through the symbol store.
type attacher struct {
	w     *world
	store *profile.SymbolStore
	mu    sync.Mutex
	n     int
	gos   *probes.Guest
	eng   *hook.Views
}

type session struct {
	guest *collector.Guest
	gos   *probes.Guest
	eng   idleEngine
}

func (s *session) Guest() *collector.Guest { return s.guest }
func (s *session) OS() collector.GuestOS   { return s.gos }
func (s *session) Engine() hook.Engine     { return s.eng }
func (s *session) Close() error            { return s.eng.Close() }

// idleEngine keeps the session up once the scripted guest has nothing
// left to run (the model reports ErrIdle), as a real idle guest would.
type idleEngine struct{ *hook.Views }

func (e idleEngine) Run(ctx context.Context, h hook.Handler) error {
	err := e.Views.Run(ctx, h)
	if errors.Is(err, sim.ErrIdle) {
		<-ctx.Done()
		return nil
	}
	return err
}

func (a *attacher) Attach(ctx context.Context, _ collector.GuestConfig) (collector.Session, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.n++; a.n > 1 {
		return nil, errors.New("scripted guest already ran")
	}
	gos, err := probes.Attach(ctx, a.w.g.M, a.store, nil)
	if err != nil {
		return nil, err
	}
	eng, err := hook.NewViews(a.w.g.M, hook.ViewsOptions{Cache: gos.OSLayer().Memory().Cache})
	if err != nil {
		return nil, err
	}
	a.gos, a.eng = gos, eng
	return &session{guest: &collector.Guest{OS: gos.OS(), Kernel: gos.Kernel()}, gos: gos, eng: idleEngine{eng}}, nil
}

type recorder struct {
	mu      sync.Mutex
	exports []*collector.Event
	errs    map[string]int
	notices map[string]int
}

func (r *recorder) Event(*collector.Event) {}
func (r *recorder) ProbeError(d, p, reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs[p+"/"+reason]++
}
func (r *recorder) Notice(d, k string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.notices[k]++
}
func (r *recorder) Attach(string, error)              {}
func (r *recorder) Up(string, *collector.Guest, bool) {}
func (r *recorder) Dropped(string, string)            {}
func (r *recorder) Queue(string, func() int)          {}
func (r *recorder) Name() string                      { return "rec" }
func (r *recorder) Close(context.Context) error       { return nil }
func (r *recorder) Export(ev *collector.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.exports = append(r.exports, ev)
}

type want struct {
	kind    collector.Kind
	probe   string
	process collector.Process
	path    string
}

// TestEndToEnd runs the four probes in the collector over the Views engine
// on the model, for each layout: the scripted guest calls the hooked
// functions from two vCPUs, pages a hooked page out and in, and pages out an
// OBJECT_ATTRIBUTES page, and the collector must emit exactly the expected
// events. Each layout runs under several schedules of the two vCPUs.
func TestEndToEnd(t *testing.T) {
	type run struct {
		profile string
		seed    uint64
		latency float64
	}
	var runs []run
	for _, name := range wintest.ProfileNames {
		runs = append(runs, run{name, 7, 0}, run{name, 1, 0.3}, run{name, 99, 0.6})
	}
	for _, r := range runs {
		name := r.profile
		t.Run(fmt.Sprintf("%s/seed%d", name, r.seed), func(t *testing.T) {
			w := newWorldSeed(t, name, 2, r.seed, r.latency)
			g := w.g
			var script0, script1 []sim.Op
			call := func(s *[]sim.Op, p *wintest.Process, fn string, args ...uint64) {
				op, err := g.Call(p, fn, args...)
				if err != nil {
					t.Fatal(err)
				}
				*s = append(*s, op)
			}
			// vCPU 0: explorer starts notepad; notepad creates and writes.
			script0 = append(script0, g.SwitchTo(0, w.explorer)...)
			call(&script0, w.explorer, "PspInsertProcess", uint64(w.notepad.EPROCESS), uint64(w.explorer.EPROCESS), 0x1fffff, 0)
			script0 = append(script0, g.SwitchTo(0, w.notepad)...)
			call(&script0, w.notepad, "NtCreateFile", 0x1000, 0x40100080, uint64(w.oa), 0x2000, 0, 0x80, 7, 5, 0x20, 0, 0)
			call(&script0, w.notepad, "NtWriteFile", hFile, 0, 0, 0, 0x2000, 0x3000, 12, 0, 0)
			call(&script0, w.notepad, "NtWriteFile", hEvent, 0, 0, 0, 0x2000, 0x3000, 12, 0, 0) // not a file: skipped
			call(&script0, w.notepad, "NtWriteFile", hKernel, 0, 0, 0, 0x2000, 0x3000, 12, 0, 0)
			// The OBJECT_ATTRIBUTES page is paged out: #PF injected, then the event.
			script0 = append(script0, sim.PageOut(w.oa, 1))
			call(&script0, w.notepad, "NtCreateFile", 0x1000, 0x40100080, uint64(w.oa), 0x2000, 0, 0x80, 7, 5, 0x20, 0, 0)
			// The hooked NtWriteFile page is paged out and in on a new frame.
			script0 = append(script0, sim.PageOut(g.Symbol("NtWriteFile"), 1), sim.PageIn(g.Symbol("NtWriteFile"), 1, true))
			call(&script0, w.notepad, "NtWriteFile", hFile, 0, 0, 0, 0x2000, 0x3000, 12, 0, 0)
			// The hooked NtCreateFile page is paged out; the call faults it in.
			script0 = append(script0, sim.PageOut(g.Symbol("NtCreateFile"), 1))
			call(&script0, w.notepad, "NtCreateFile", 0x1000, 0x40100080, uint64(w.oa), 0x2000, 0, 0x80, 7, 5, 0x20, 0, 0)
			call(&script0, w.notepad, "MmCleanProcessAddressSpace", uint64(w.notepad.EPROCESS))
			// vCPU 1: cmd (level-2 handle table) writes, creates, and
			// starts a child with a Parent argument that disagrees with
			// the child's InheritedFromUniqueProcessId.
			script1 = append(script1, g.SwitchTo(1, w.cmd)...)
			call(&script1, w.cmd, "NtWriteFile", hLevel2, 0, 0, 0, 0x2000, 0x3000, 12, 0, 0)
			call(&script1, w.cmd, "NtCreateFile", 0x1000, 0x40100080, uint64(w.oaAbs), 0x2000, 0, 0x80, 7, 2, 0x20, 0, 0)
			call(&script1, w.cmd, "PspInsertProcess", uint64(w.child.EPROCESS), uint64(w.explorer.EPROCESS), 0x1fffff, 0)
			call(&script1, w.cmd, "MmCleanProcessAddressSpace", uint64(w.child.EPROCESS))
			if err := g.M.Script(0, script0...); err != nil {
				t.Fatal(err)
			}
			if err := g.M.Script(1, script1...); err != nil {
				t.Fatal(err)
			}

			wants := [2][]want{{
				{collector.KindProcessStart, "PspInsertProcess", proc(w.notepad), ""},
				{collector.KindFileCreate, "NtCreateFile", proc(w.notepad), w.oaName},
				{collector.KindFileWrite, "NtWriteFile", proc(w.notepad), w.fileName},
				{collector.KindFileWrite, "NtWriteFile", proc(w.notepad), w.kfileName},
				{collector.KindFileCreate, "NtCreateFile", proc(w.notepad), w.oaName},
				{collector.KindFileWrite, "NtWriteFile", proc(w.notepad), w.fileName},
				{collector.KindFileCreate, "NtCreateFile", proc(w.notepad), w.oaName},
				{collector.KindProcessExit, "MmCleanProcessAddressSpace", func() collector.Process { p := proc(w.notepad); p.PEB = 0; return p }(), ""},
			}, {
				{collector.KindFileWrite, "NtWriteFile", proc(w.cmd), w.fileName},
				{collector.KindFileCreate, "NtCreateFile", proc(w.cmd), w.absN},
				{collector.KindProcessStart, "PspInsertProcess", proc(w.child), ""},
				{collector.KindProcessExit, "MmCleanProcessAddressSpace", func() collector.Process { p := proc(w.child); p.PEB = 0; return p }(), ""},
			}}

			rec, a := runCollector(t, w, name)
			rec.mu.Lock()
			defer rec.mu.Unlock()
			var got [2][]want
			counts := map[collector.Kind]int{}
			for _, ev := range rec.exports {
				counts[ev.Kind]++
				if ev.Probe == "" {
					continue
				}
				if ev.Guest.OS != "windows" || ev.Guest.Kernel != g.CodeView.PDB+"/"+g.CodeView.Info().Key() {
					t.Errorf("guest %+v", ev.Guest)
				}
				got[ev.VCPU] = append(got[ev.VCPU], want{ev.Kind, ev.Probe, ev.Process, ev.Path})
				// The model's EPROCESS.ExitStatus is 0; the win7
				// fragment profile lacks the field: no code.
				if ev.Kind == collector.KindProcessExit {
					if hasField := name != "win7"; (ev.ExitCode != nil) != hasField || (hasField && *ev.ExitCode != 0) {
						t.Errorf("exit of pid %d: exit code %v, want 0 from the profile's ExitStatus (%v)", ev.Process.PID, ev.ExitCode, hasField)
					}
				}
			}
			for v := range got {
				if !slices.Equal(got[v], wants[v]) {
					t.Errorf("vCPU %d events:\n got %+v\nwant %+v", v, got[v], wants[v])
				}
			}
			if rec.errs["NtWriteFile/skip"] != 1 || len(rec.errs) != 1 {
				t.Errorf("probe errors %v, want one NtWriteFile skip", rec.errs)
			}
			if counts[collector.KindPageFaultInjected] != 1 {
				t.Errorf("page faults injected: %d, want 1 (events %v)", counts[collector.KindPageFaultInjected], counts)
			}
			if counts[collector.KindPageOut] < 2 || counts[collector.KindPageIn] < 2 {
				t.Errorf("page-out/in events %v", counts)
			}
			if a.gos.ParentMismatches() != 1 || a.gos.Counters()["windows_parent_mismatches"] != 1 {
				t.Errorf("parent mismatches %d (exported %v), want 1", a.gos.ParentMismatches(), a.gos.Counters())
			}
			for _, o := range g.M.Observations() {
				if o.Kind == sim.ObsException && !o.GuestCaused && !o.Injected {
					t.Errorf("guest saw an exception it did not cause: %v", o)
				}
				if o.Kind == sim.ObsScriptError || o.Kind == sim.ObsRead && o.Mismatch {
					t.Errorf("guest observation %v", o)
				}
			}
			t.Logf("events by kind %v, notices %v, probe errors %v, engine %+v", counts, rec.notices, rec.errs, a.eng.Stats())
			_ = paging.Level4
		})
	}
}

func TestSourceFor(t *testing.T) {
	w := newWorld(t, "win10-22H2", 1)
	dir, err := wintest.ProfileDir()
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, wintest.Profiles[0].File)
	for _, pc := range []collector.ProfileConfig{{ISF: file}, {CacheDir: dir}} {
		src, err := probes.SourceFor(pc)
		if err != nil {
			t.Fatal(err)
		}
		g, err := probes.Attach(t.Context(), w.g.M, src, nil)
		if err != nil {
			t.Fatalf("%+v: %v", pc, err)
		}
		if g.Kernel() != "ntkrnlmp.pdb/606FF669409B00F7FC8C61A9C16701291" {
			t.Errorf("kernel %s", g.Kernel())
		}
	}
	if _, err := probes.SourceFor(collector.ProfileConfig{}); err == nil {
		t.Error("no source accepted")
	}
	// A guest whose kernel is not in the store: a clear error naming it.
	other := newWorld(t, "win11-21H2", 1)
	if _, err := probes.Attach(t.Context(), other.g.M, profile.ISFFile(file), nil); !errors.Is(err, profile.ErrNoProfile) {
		t.Errorf("wrong ISF: %v", err)
	}
}

// runCollector runs the collector (every kind enabled) on w's guest with
// profile name until the guest's scripts are done, and returns what it
// recorded and its attacher.
func runCollector(t *testing.T, w *world, name string) (*recorder, *attacher) {
	t.Helper()
	g := w.g
	rec := &recorder{errs: map[string]int{}, notices: map[string]int{}}
	a := &attacher{w: w, store: store(t, name)}
	c, err := collector.New(collector.Options{
		Guests:    []collector.GuestConfig{{Name: "win", Driver: "sim", OS: "windows"}},
		Attachers: map[string]collector.Attacher{"sim": a},
		Enabled:   collector.Kinds(),
		Metrics:   rec, Sinks: []collector.Sink{rec},
		Backoff: collector.Backoff{Initial: time.Hour},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- c.Run(ctx) }()
	deadline := time.Now().Add(60 * time.Second)
	for !g.M.Done() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // let the queue drain
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if !g.M.Done() {
		t.Fatal("guest script did not finish")
	}

	return rec, a
}

// utf16Bytes encodes s as UTF-16LE.
func utf16Bytes(s string) []byte {
	var b []byte
	for _, r := range utf16.Encode([]rune(s)) {
		b = binary.LittleEndian.AppendUint16(b, r)
	}
	return b
}

// TestSetInformationFile: NtSetInformationFile's rename classes give
// file.rename (from the handle's file to the new name), its disposition
// classes that delete give file.delete, other classes and undeletes are
// skipped, and a FileNameLength beyond Length is a decode error.
func TestSetInformationFile(t *testing.T) {
	for _, name := range wintest.ProfileNames {
		if name == "win7" { // the fragment profile has no NtSetInformationFile
			continue
		}
		t.Run(name, func(t *testing.T) {
			w := newWorld(t, name, 2)
			g := w.g
			va, err := g.UserAlloc(w.notepad, 1)
			if err != nil {
				t.Fatal(err)
			}
			newName := `\??\C:\Users\test\Documents\a.txt.locked`
			u := utf16Bytes(newName)
			info := make([]byte, 20+len(u))
			binary.LittleEndian.PutUint32(info[16:], uint32(len(u)))
			copy(info[20:], u)
			bad := slices.Clone(info)
			binary.LittleEndian.PutUint32(bad[16:], uint32(len(u)+2))
			rename, badRename, del, undel, delEx := va, va+0x200, va+0x400, va+0x410, va+0x420
			for at, b := range map[introspect.Va][]byte{rename: info, badRename: bad, del: {1}, undel: {0}, delEx: {1, 0, 0, 0}} {
				if err := w.notepad.AS.Write(at, b); err != nil {
					t.Fatal(err)
				}
			}
			var script []sim.Op
			script = append(script, g.SwitchTo(0, w.notepad)...)
			// The model's Call writes stack arguments when the script is
			// built, so each call's class is stored by an op of its own.
			call := func(args ...uint64) {
				op, err := g.Call(w.notepad, probes.FuncFileSetInfo, args...)
				if err != nil {
					t.Fatal(err)
				}
				script = append(script, sim.Write(w.notepad.Stack+0x28, binary.LittleEndian.AppendUint64(nil, args[4])), op)
			}
			call(hFile, 0x2000, uint64(rename), uint64(len(info)), oswin.FileRenameInformation)
			call(hFile, 0x2000, uint64(rename), uint64(len(info)), oswin.FileRenameInformationEx)
			call(hFile, 0x2000, uint64(badRename), uint64(len(bad)-2), oswin.FileRenameInformation) // decode error
			call(hFile, 0x2000, uint64(del), 1, oswin.FileDispositionInformation)
			call(hFile, 0x2000, uint64(undel), 1, oswin.FileDispositionInformation) // skip
			call(hFile, 0x2000, uint64(delEx), 4, oswin.FileDispositionInformationEx)
			call(hFile, 0x2000, uint64(del), 40, 4)                                // FileBasicInformation: skip
			call(hEvent, 0x2000, uint64(del), 1, oswin.FileDispositionInformation) // not a file: skip
			if err := g.M.Script(0, script...); err != nil {
				t.Fatal(err)
			}
			rec, _ := runCollector(t, w, name)
			rec.mu.Lock()
			defer rec.mu.Unlock()
			type ev struct {
				kind          collector.Kind
				old, path, sc string
			}
			var got []ev
			for _, e := range rec.exports {
				if e.Probe == probes.FuncFileSetInfo {
					if e.Process != proc(w.notepad) {
						t.Errorf("process %+v", e.Process)
					}
					got = append(got, ev{e.Kind, e.OldPath, e.Path, e.Syscall})
				}
			}
			want := []ev{
				{collector.KindFileRename, w.fileName, newName, ""},
				{collector.KindFileRename, w.fileName, newName, ""},
				{collector.KindFileDelete, "", w.fileName, "disposition"},
				{collector.KindFileDelete, "", w.fileName, "disposition"},
			}
			if !slices.Equal(got, want) {
				t.Errorf("events\n got %+v\nwant %+v", got, want)
			}
			if rec.errs[probes.FuncFileSetInfo+"/skip"] != 3 || rec.errs[probes.FuncFileSetInfo+"/decode"] != 1 {
				t.Errorf("probe errors %v, want 3 skips and 1 decode error of %s", rec.errs, probes.FuncFileSetInfo)
			}
		})
	}
}
