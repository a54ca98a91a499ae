package testguest

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// ManifestPrefix starts every line of the guest's protocol on the console.
const ManifestPrefix = "VMI "

// maxLineLen bounds a manifest line; longer lines are rejected unparsed.
const maxLineLen = 4096

// Per-round counts of the workload (see README.md). They are what the guest
// scripts do; the integration test checks them against the manifest.
const (
	SpawnsPerRound     = 7 // vmi-round, 2 vmi-writer, 2 vmi-child, 1 vmi-exiter, 1 vmi-writev
	ExitsPerRound      = 7 // every spawned process is reaped
	FilesPerRound      = 8 // 2 per vmi-writer, 1 per vmi-child, 1 by vmi-writev (under /tmp/vmi), 1 by vmi-round (EtcFile)
	WritesPerFile      = 2 // "echo >" then "echo >>" (write(2)); vmi-writev: two writev(2)
	OpensPerFile       = 2 // O_CREAT|O_TRUNC, then O_CREAT|O_APPEND
	FileWritesPerRound = FilesPerRound * WritesPerFile
	// WritevWritesPerRound of the FileWritesPerRound are writev(2) calls
	// (those of WritevFile); the others are write(2).
	WritevWritesPerRound = WritesPerFile
	// CopiesPerRound are the files vmi-writev fills by sendfile(2),
	// splice(2), copy_file_range(2) and an io_uring WRITE, one call each
	// (CopyFamilies).
	CopiesPerRound = 4
	// RenamesPerRound: vmi-writev renames its copy_file_range copy.
	RenamesPerRound = 1
	// ExecsPerRound: every spawn execs its program once. vmi-round's
	// final "exec rm" is no execve(2): busybox's ash runs its own applets
	// in-process (NOEXEC applets) and only renames the task (prctl
	// PR_SET_NAME), so the live tests see the unlinks come from "rm"
	// with no process.exec before them.
	ExecsPerRound = SpawnsPerRound
)

// CopyFamilies are the system calls of the copy records, in the order
// vmi-writev makes them.
var CopyFamilies = []string{"sendfile", "splice", "copy_file_range", "io_uring"}

// EtcFile is the file vmi-round writes under /etc in round r: a write the
// default suspicious-write rule linux-etc flags (collector/rules).
func EtcFile(r int) string { return fmt.Sprintf("/etc/vmi-test-r%d.conf", r) }

// WritevFile is the file vmi-writev writes in round r, with writev(2)
// where the shell writers use write(2).
func WritevFile(r int) string { return fmt.Sprintf("/tmp/vmi/r%d-v.dat", r) }

// Names of the workload processes (their comm after exec).
const (
	NameRound  = "vmi-round"
	NameWriter = "vmi-writer"
	NameChild  = "vmi-child"
	NameExiter = "vmi-exiter"
	// NameWritev is the Go program guestbin/vmi-writev, a multi-threaded
	// process that ends single-threaded (it execs busybox's "true" under
	// its own name before exiting).
	NameWritev = "vmi-writev"
)

// Kind is the type of a manifest record.
type Kind string

// Record kinds printed by the guest.
const (
	KindSpawn    Kind = "spawn"    // a process was started (fork + exec of a workload script)
	KindFile     Kind = "file"     // a file was created and written
	KindCopy     Kind = "copy"     // a file was created and filled by one sendfile, splice, copy_file_range or io_uring write
	KindRename   Kind = "rename"   // a file was renamed
	KindExit     Kind = "exit"     // a process was reaped by its parent
	KindDone     Kind = "done"     // a round finished
	KindIdle     Kind = "idle"     // the guest waits for a command
	KindLoop     Kind = "loop"     // the guest started looping
	KindPoweroff Kind = "poweroff" // the guest is powering off
	KindError    Kind = "error"    // the guest rejected a command
)

// Record is one parsed manifest line. Fields not used by a kind are zero.
type Record struct {
	Kind Kind
	PID  int    // spawn, file, exit
	PPID int    // spawn
	Name string // spawn: process name (comm after exec)
	Path string // file, copy: absolute path; rename: the new path
	// OldPath is the path a rename renamed from.
	OldPath string
	// Syscall is the system call that filled a copy.
	Syscall string
	Opens   int // file: open(2) calls on the path
	Writes  int // file: write(2) calls on the path
	Bytes   int // file: bytes written in total
	Status  int // exit: exit status as reported by wait
	Round   int // spawn, file, exit, done
	// Interval is the loop pause in milliseconds (loop).
	IntervalMS int
	// Msg is the error message (error).
	Msg string
}

// ParseLine parses one console line. ok is false for lines that are not
// manifest lines (do not start with "VMI "); err is set for manifest lines
// that are malformed. A trailing carriage return is ignored.
func ParseLine(line string) (rec Record, ok bool, err error) {
	line = strings.TrimRight(line, "\r\n")
	// The console may deliver stray bytes before the prefix (e.g. kernel
	// output without newline); the prefix must start the line.
	rest, found := strings.CutPrefix(line, ManifestPrefix)
	if !found {
		return Record{}, false, nil
	}
	if len(line) > maxLineLen {
		return Record{}, true, fmt.Errorf("manifest line too long (%d bytes)", len(line))
	}
	fields := strings.Fields(rest)
	if len(fields) == 0 {
		return Record{}, true, errors.New("manifest line without kind")
	}
	rec.Kind = Kind(fields[0])
	kv := make(map[string]string, len(fields)-1)
	for _, f := range fields[1:] {
		k, v, ok := strings.Cut(f, "=")
		if !ok || k == "" {
			return Record{}, true, fmt.Errorf("manifest %s: bad field %q", rec.Kind, f)
		}
		if _, dup := kv[k]; dup {
			return Record{}, true, fmt.Errorf("manifest %s: duplicate field %q", rec.Kind, k)
		}
		kv[k] = v
	}
	p := fieldParser{kv: kv, kind: rec.Kind}
	switch rec.Kind {
	case KindSpawn:
		rec.PID = p.pid("pid")
		rec.PPID = p.pid("ppid")
		rec.Name = p.str("name")
		rec.Round = p.num("round")
	case KindFile:
		rec.Path = p.str("path")
		rec.PID = p.pid("pid")
		rec.Opens = p.num("opens")
		rec.Writes = p.num("writes")
		rec.Bytes = p.num("bytes")
		rec.Round = p.num("round")
		if p.err == nil && !strings.HasPrefix(rec.Path, "/") {
			p.err = fmt.Errorf("manifest file: path %q is not absolute", rec.Path)
		}
	case KindCopy:
		rec.Path = p.str("path")
		rec.PID = p.pid("pid")
		rec.Syscall = p.str("syscall")
		rec.Writes = p.num("calls")
		rec.Bytes = p.num("bytes")
		rec.Round = p.num("round")
	case KindRename:
		rec.OldPath = p.str("old")
		rec.Path = p.str("new")
		rec.PID = p.pid("pid")
		rec.Round = p.num("round")
	case KindExit:
		rec.PID = p.pid("pid")
		rec.Status = p.num("status")
		rec.Round = p.num("round")
	case KindDone:
		rec.Round = p.num("round")
	case KindLoop:
		rec.IntervalMS = p.num("interval_ms")
	case KindError:
		rec.Msg = p.str("msg")
	case KindIdle, KindPoweroff:
	default:
		return Record{}, true, fmt.Errorf("manifest: unknown kind %q", rec.Kind)
	}
	if p.err != nil {
		return Record{}, true, p.err
	}
	return rec, true, nil
}

type fieldParser struct {
	kv   map[string]string
	kind Kind
	err  error
}

func (p *fieldParser) str(k string) string {
	v, ok := p.kv[k]
	if (!ok || v == "") && p.err == nil {
		p.err = fmt.Errorf("manifest %s: missing %s", p.kind, k)
	}
	return v
}

func (p *fieldParser) num(k string) int {
	s := p.str(k)
	if p.err != nil {
		return 0
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		p.err = fmt.Errorf("manifest %s: bad %s %q", p.kind, k, s)
		return 0
	}
	return n
}

func (p *fieldParser) pid(k string) int {
	n := p.num(k)
	if p.err == nil && n == 0 {
		p.err = fmt.Errorf("manifest %s: %s is 0", p.kind, k)
	}
	return n
}

// Spawn is a process the workload started.
type Spawn struct {
	PID   int    `json:"pid"`
	PPID  int    `json:"ppid"`
	Name  string `json:"name"`
	Round int    `json:"round"`
}

// File is a file the workload created and wrote.
type File struct {
	Path   string `json:"path"`
	PID    int    `json:"pid"`
	Opens  int    `json:"opens"`
	Writes int    `json:"writes"`
	Bytes  int    `json:"bytes"`
	Round  int    `json:"round"`
}

// Copy is a file the workload created and filled by Calls calls of
// Syscall (sendfile, splice or copy_file_range).
type Copy struct {
	Path    string `json:"path"`
	PID     int    `json:"pid"`
	Syscall string `json:"syscall"`
	Calls   int    `json:"calls"`
	Bytes   int    `json:"bytes"`
	Round   int    `json:"round"`
}

// Rename is a rename(2) of the workload.
type Rename struct {
	Old   string `json:"old"`
	New   string `json:"new"`
	PID   int    `json:"pid"`
	Round int    `json:"round"`
}

// Exit is a process the workload reaped.
type Exit struct {
	PID    int `json:"pid"`
	Status int `json:"status"`
	Round  int `json:"round"`
}

// Manifest is what the guest reported for one or more rounds.
type Manifest struct {
	Rounds  []int    `json:"rounds"` // round numbers in the order they finished
	Spawns  []Spawn  `json:"spawns"`
	Files   []File   `json:"files"`
	Copies  []Copy   `json:"copies"`
	Renames []Rename `json:"renames"`
	Exits   []Exit   `json:"exits"`
}

// Add adds a record; records of other kinds than spawn, file, exit and done
// are ignored.
func (m *Manifest) Add(r Record) {
	switch r.Kind {
	case KindSpawn:
		m.Spawns = append(m.Spawns, Spawn{PID: r.PID, PPID: r.PPID, Name: r.Name, Round: r.Round})
	case KindFile:
		m.Files = append(m.Files, File{Path: r.Path, PID: r.PID, Opens: r.Opens, Writes: r.Writes, Bytes: r.Bytes, Round: r.Round})
	case KindCopy:
		m.Copies = append(m.Copies, Copy{Path: r.Path, PID: r.PID, Syscall: r.Syscall, Calls: r.Writes, Bytes: r.Bytes, Round: r.Round})
	case KindRename:
		m.Renames = append(m.Renames, Rename{Old: r.OldPath, New: r.Path, PID: r.PID, Round: r.Round})
	case KindExit:
		m.Exits = append(m.Exits, Exit{PID: r.PID, Status: r.Status, Round: r.Round})
	case KindDone:
		m.Rounds = append(m.Rounds, r.Round)
	}
}

// RoundFiles are the files that round r's vmi-round removes at its end
// (with one unlink(2) each): every file and copy of the round, renamed
// ones under their new name.
func (m *Manifest) RoundFiles(r int) []string {
	renamed := map[string]string{}
	for _, rn := range m.Renames {
		if rn.Round == r {
			renamed[rn.Old] = rn.New
		}
	}
	var out []string
	add := func(p string) {
		if n, ok := renamed[p]; ok {
			p = n
		}
		out = append(out, p)
	}
	for _, f := range m.Files {
		if f.Round == r {
			add(f.Path)
		}
	}
	for _, c := range m.Copies {
		if c.Round == r {
			add(c.Path)
		}
	}
	return out
}

// SpawnByPID returns the spawn record of pid.
func (m *Manifest) SpawnByPID(pid int) (Spawn, bool) {
	for _, s := range m.Spawns {
		if s.PID == pid {
			return s, true
		}
	}
	return Spawn{}, false
}

// Check verifies that the manifest is complete and consistent for its
// rounds: exact counts per round, every file written by a spawned process,
// every spawn reaped, parents form the expected tree, and no pid reused
// within a round. It returns all problems found, joined.
func (m *Manifest) Check() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	rounds := map[int]bool{}
	for _, r := range m.Rounds {
		if rounds[r] {
			bad("round %d finished twice", r)
		}
		rounds[r] = true
	}
	spawns := map[int]Spawn{}
	perRound := map[int][3]int{} // spawns, files, exits
	for _, s := range m.Spawns {
		if _, dup := spawns[s.PID]; dup {
			bad("pid %d spawned twice", s.PID)
		}
		spawns[s.PID] = s
		c := perRound[s.Round]
		c[0]++
		perRound[s.Round] = c
	}
	for _, s := range m.Spawns {
		want := map[string]string{NameWriter: NameRound, NameExiter: NameRound, NameWritev: NameRound, NameChild: NameWriter}
		switch s.Name {
		case NameRound:
			// Started by /init (pid 1).
			if s.PPID != 1 {
				bad("%s pid %d: ppid %d, want 1", s.Name, s.PID, s.PPID)
			}
		case NameWriter, NameExiter, NameChild, NameWritev:
			p, ok := spawns[s.PPID]
			if !ok || p.Name != want[s.Name] || p.Round != s.Round {
				bad("%s pid %d: parent %d is not a %s of round %d", s.Name, s.PID, s.PPID, want[s.Name], s.Round)
			}
		default:
			bad("unexpected process name %q (pid %d)", s.Name, s.PID)
		}
	}
	paths := map[string]bool{}
	for _, f := range m.Files {
		if paths[f.Path] {
			bad("file %s reported twice", f.Path)
		}
		paths[f.Path] = true
		s, ok := spawns[f.PID]
		etc := f.Path == EtcFile(f.Round)
		vec := f.Path == WritevFile(f.Round)
		switch {
		case !ok:
			bad("file %s written by unknown pid %d", f.Path, f.PID)
		case etc && s.Name != NameRound:
			bad("file %s written by %s, want %s", f.Path, s.Name, NameRound)
		case vec && s.Name != NameWritev:
			bad("file %s written by %s, want %s", f.Path, s.Name, NameWritev)
		case !etc && !vec && s.Name != NameWriter && s.Name != NameChild:
			bad("file %s written by %s, want %s or %s", f.Path, s.Name, NameWriter, NameChild)
		}
		if f.Writes != WritesPerFile || f.Opens != OpensPerFile {
			bad("file %s: opens=%d writes=%d, want %d and %d", f.Path, f.Opens, f.Writes, OpensPerFile, WritesPerFile)
		}
		if !etc && !strings.HasPrefix(f.Path, fmt.Sprintf("/tmp/vmi/r%d-", f.Round)) {
			bad("file %s: path does not match round %d", f.Path, f.Round)
		}
		c := perRound[f.Round]
		c[1]++
		perRound[f.Round] = c
	}
	copies := map[int]int{}
	for _, c := range m.Copies {
		s, ok := spawns[c.PID]
		if !ok || s.Name != NameWritev {
			bad("copy %s by pid %d, not a %s", c.Path, c.PID, NameWritev)
		}
		if c.Calls != 1 || c.Bytes == 0 || !strings.HasPrefix(c.Path, WritevFile(c.Round)+".") {
			bad("copy %+v: want one call of some bytes into a copy of %s", c, WritevFile(c.Round))
		}
		copies[c.Round]++
	}
	renames := map[int]int{}
	for _, rn := range m.Renames {
		if s, ok := spawns[rn.PID]; !ok || s.Name != NameWritev {
			bad("rename %s by pid %d, not a %s", rn.Old, rn.PID, NameWritev)
		}
		renames[rn.Round]++
	}
	for r := range rounds {
		if copies[r] != CopiesPerRound || renames[r] != RenamesPerRound {
			bad("round %d: %d copies, %d renames; want %d, %d", r, copies[r], renames[r], CopiesPerRound, RenamesPerRound)
		}
	}
	exited := map[int]bool{}
	for _, e := range m.Exits {
		if exited[e.PID] {
			bad("pid %d exited twice", e.PID)
		}
		exited[e.PID] = true
		s, ok := spawns[e.PID]
		if !ok {
			bad("exit of unknown pid %d", e.PID)
			continue
		}
		want := 0
		if s.Name == NameExiter {
			want = ExiterStatus
		}
		if e.Status != want {
			bad("%s pid %d exited with status %d, want %d", s.Name, e.PID, e.Status, want)
		}
		c := perRound[e.Round]
		c[2]++
		perRound[e.Round] = c
	}
	for pid, s := range spawns {
		if !exited[pid] {
			bad("%s pid %d never exited", s.Name, pid)
		}
	}
	keys := make([]int, 0, len(perRound))
	for r := range perRound {
		keys = append(keys, r)
	}
	sort.Ints(keys)
	for _, r := range keys {
		if !rounds[r] {
			bad("records for round %d, which did not finish", r)
		}
	}
	for r := range rounds {
		c := perRound[r]
		if c != [3]int{SpawnsPerRound, FilesPerRound, ExitsPerRound} {
			bad("round %d: %d spawns, %d files, %d exits; want %d, %d, %d", r, c[0], c[1], c[2], SpawnsPerRound, FilesPerRound, ExitsPerRound)
		}
	}
	return errors.Join(errs...)
}

// ExiterStatus is the exit status of vmi-exiter.
const ExiterStatus = 3
