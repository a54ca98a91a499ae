// Package rules flags suspicious file writes in the collector's event
// stream: each rule matches the guest OS, the event kind, the file path
// (globs with **; Windows paths case-insensitive with device prefixes and
// separators normalised), the process name, and optionally only the first
// write of a newly started process. A hit adds the rule's name to
// Event.Rules, which the exporters turn into the vmi.rules span attribute
// and vmi_suspicious_file_writes_total{domain,rule}.
//
// Rules are compiled once; matching an event that no rule concerns does
// not allocate.
package rules

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/vmi-exporter/vmi-exporter/collector"
)

// OS values of Config.OS.
const (
	OSAny     = "any"
	OSLinux   = "linux"
	OSWindows = "windows"
)

// Severities of Config.Severity.
var Severities = []string{"info", "warning", "critical"}

// Config is one rule as written in the configuration file (the koanf
// "rules" list) or in the default rule set.
type Config struct {
	// Name identifies the rule: the rule label of the metric and an entry
	// of the vmi.rules span attribute. Letters, digits, '-', '_' and '.'.
	Name        string `yaml:"name"`
	Description string `yaml:"description"`
	// OS is linux, windows or any (the default).
	OS string `yaml:"os"`
	// Kinds are the event kinds the rule looks at: file.write (the
	// default) or any other kind whose collector.KindInfo is a RuleTarget
	// (file.create).
	Kinds []string `yaml:"kinds"`
	// Paths are globs; the rule needs one to match (no paths: any path).
	Paths []string `yaml:"paths"`
	// ExcludePaths are globs that turn a path hit off (noisy files inside
	// a watched tree).
	ExcludePaths []string `yaml:"exclude_paths"`
	// Processes are globs on the process name; if set, one must match.
	Processes []string `yaml:"processes"`
	// ExcludeProcesses are globs on the process name that turn a hit off.
	ExcludeProcesses []string `yaml:"exclude_processes"`
	// FirstWriteByNewProcess makes the rule fire only on the first write of
	// a process whose start the collector saw.
	FirstWriteByNewProcess bool `yaml:"first_write_by_new_process"`
	// Threshold > 1 makes the rule a burst rule: it fires only once one
	// process has matched it Threshold times within Window (e.g. many
	// renames to an unusual extension: ransomware); that match and every
	// further one inside the window are hits. 0 or 1: every match.
	Threshold int `yaml:"threshold"`
	// Window is a burst rule's window (default 1m).
	Window time.Duration `yaml:"window"`
	// Severity is info, warning (the default) or critical.
	Severity string `yaml:"severity"`
	// Enabled false switches a rule off (mostly to disable a default rule
	// by repeating its name). Default true.
	Enabled *bool `yaml:"enabled"`
}

//go:embed default.yaml
var defaultYAML []byte

// Defaults returns the default rule set (default.yaml, documented in
// README.md).
func Defaults() []Config {
	cs, err := parse(defaultYAML)
	if err != nil {
		panic(fmt.Sprintf("rules: embedded default.yaml: %v", err)) // caught by the package tests
	}
	return cs
}

// Decode turns the configuration's "rules" entries (as koanf unmarshals
// them) into rule configs, rejecting unknown keys.
func Decode(raw []map[string]any) ([]Config, error) {
	if len(raw) == 0 {
		return nil, nil
	}
	b, err := yaml.Marshal(raw)
	if err != nil {
		return nil, fmt.Errorf("rules: %w", err)
	}
	return parse(b)
}

func parse(b []byte) ([]Config, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var cs []Config
	if err := dec.Decode(&cs); err != nil {
		return nil, fmt.Errorf("rules: %w", err)
	}
	return cs, nil
}

// Merge applies the user's rules over base: a rule with the name of a base
// rule replaces it (or, with enabled: false, removes it); other rules are
// added after the base ones.
func Merge(base, user []Config) []Config {
	out := slices.Clone(base)
	for _, u := range user {
		i := slices.IndexFunc(out, func(c Config) bool { return c.Name == u.Name })
		if i >= 0 {
			out[i] = u
		} else {
			out = append(out, u)
		}
	}
	return slices.DeleteFunc(out, func(c Config) bool { return c.Enabled != nil && !*c.Enabled })
}

var validName = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

// rule is a compiled Config.
type rule struct {
	cfg              Config
	names            []string // {cfg.Name}: returned as is, so a hit does not allocate
	os               string
	kinds            uint32 // bit per collector.Kind
	paths, exclPaths []*glob
	procs, exclProcs []*glob
	firstWrite       bool
	burst            *burstTable // Threshold > 1
}

// Engine matches events against compiled rules. It implements
// collector.Rule and is safe for concurrent use.
type Engine struct {
	rules []*rule
	// kinds is the union of the rules' kinds: other events return at once.
	kinds uint32
	// procs tracks processes seen starting, when a rule needs it.
	procs *procTable
	// maxLen is Options.MaxMatchLen resolved.
	maxLen int
}

var _ collector.Rule = (*Engine)(nil)

// Options configure an Engine.
type Options struct {
	// MaxProcesses bounds the table of started processes that
	// first_write_by_new_process rules use (default 4096); the least
	// recently started are forgotten first.
	MaxProcesses int
	// MaxMatchLen bounds the cost of matching, which runs while the
	// guest's vCPU waits: a path or process name longer than this many
	// bytes is matched on its first MaxMatchLen bytes
	// (collector.DefaultMaxStringLen if 0, the collector's own cap).
	MaxMatchLen int
}

// New validates and compiles rules. All problems are reported at once.
func New(cfgs []Config, o Options) (*Engine, error) {
	e := &Engine{maxLen: o.MaxMatchLen}
	if e.maxLen <= 0 {
		e.maxLen = collector.DefaultMaxStringLen
	}
	var errs []error
	maxProcs := o.MaxProcesses
	if maxProcs <= 0 {
		maxProcs = 4096
	}
	seen := map[string]bool{}
	for i, c := range cfgs {
		r, err := compile(c)
		if err != nil {
			errs = append(errs, fmt.Errorf("rules[%d] (%s): %w", i, c.Name, err))
			continue
		}
		if seen[c.Name] {
			errs = append(errs, fmt.Errorf("rules[%d] (%s): name used twice", i, c.Name))
			continue
		}
		seen[c.Name] = true
		e.rules = append(e.rules, r)
		e.kinds |= r.kinds
		if r.firstWrite && e.procs == nil {
			e.procs = newProcTable(maxProcs)
		}
		if c.Threshold > 1 {
			r.burst = newBurstTable(maxProcs, c.Threshold, r.cfg.Window)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if e.procs != nil {
		// The table learns from process starts and exits.
		e.kinds |= 1<<collector.KindProcessStart | 1<<collector.KindProcessExit
	}
	return e, nil
}

func compile(c Config) (*rule, error) {
	if !validName.MatchString(c.Name) {
		return nil, errors.New("name must be 1-64 letters, digits, '_', '.' or '-'")
	}
	r := &rule{cfg: c, names: []string{c.Name}, firstWrite: c.FirstWriteByNewProcess}
	switch c.OS {
	case "", OSAny:
		r.os = OSAny
	case OSLinux, OSWindows:
		r.os = c.OS
	default:
		return nil, fmt.Errorf("os %q is not linux, windows or any", c.OS)
	}
	if r.cfg.Severity == "" {
		r.cfg.Severity = "warning"
	}
	if !slices.Contains(Severities, r.cfg.Severity) {
		return nil, fmt.Errorf("severity %q is not one of %s", c.Severity, strings.Join(Severities, ", "))
	}
	kinds := c.Kinds
	if len(kinds) == 0 {
		kinds = []string{collector.KindFileWrite.String()}
	}
	for _, k := range kinds {
		kind, err := collector.ParseKind(k)
		if err != nil || !kind.Info().RuleTarget {
			return nil, fmt.Errorf("kind %q: rules look at %s only", k, strings.Join(collector.KindNames(collector.RuleKinds()), ", "))
		}
		r.kinds |= 1 << kind
	}
	// Windows paths and names are case-insensitive; a rule for any OS
	// folds case too, so that it matches Windows paths at all (on Linux
	// this may match a few more paths than the pattern's exact case).
	fold := r.os != OSLinux
	var err error
	if r.paths, err = globs("paths", c.Paths, fold); err != nil {
		return nil, err
	}
	if r.exclPaths, err = globs("exclude_paths", c.ExcludePaths, fold); err != nil {
		return nil, err
	}
	if r.procs, err = globs("processes", c.Processes, fold); err != nil {
		return nil, err
	}
	if r.exclProcs, err = globs("exclude_processes", c.ExcludeProcesses, fold); err != nil {
		return nil, err
	}
	if c.Threshold < 0 || c.Window < 0 {
		return nil, fmt.Errorf("threshold %d, window %v: must not be negative", c.Threshold, c.Window)
	}
	if c.Threshold > 1 && r.cfg.Window == 0 {
		r.cfg.Window = time.Minute
	}
	if len(r.paths) == 0 && len(r.procs) == 0 && !r.firstWrite {
		return nil, errors.New("matches every write: give paths, processes or first_write_by_new_process")
	}
	return r, nil
}

func globs(key string, ps []string, fold bool) ([]*glob, error) {
	var gs []*glob
	for _, p := range ps {
		g, err := compileGlob(p, fold)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", key, err)
		}
		gs = append(gs, g)
	}
	return gs, nil
}

// Rules returns the compiled rules' configurations, with defaults filled
// in (for documentation and logs).
func (e *Engine) Rules() []Config {
	out := make([]Config, len(e.rules))
	for i, r := range e.rules {
		out[i] = r.cfg
	}
	return out
}

// Match returns the names of the rules ev matches. The slice must not be
// modified. Events of kinds no rule looks at, and writes no rule matches,
// cost a few comparisons and no allocation.
func (e *Engine) Match(ev *collector.Event) []string {
	if e.kinds&(1<<ev.Kind) == 0 {
		return nil
	}
	var (
		domain, osName string
	)
	if ev.Guest != nil {
		domain, osName = ev.Guest.Domain, ev.Guest.OS
	}
	switch ev.Kind {
	case collector.KindProcessStart:
		if e.procs != nil {
			e.procs.started(domain, ev.Process.PID)
		}
		return nil
	case collector.KindProcessExit:
		if e.procs != nil {
			e.procs.exited(domain, ev.Process.PID)
		}
		return nil
	}
	// firstWrite: 0 not yet known, 1 yes, 2 no. Every write consults the
	// table, so that "first" means first, whichever rule asks.
	first := 0
	if e.procs != nil && ev.Kind == collector.KindFileWrite {
		first = 2
		if e.procs.firstWrite(domain, ev.Process.PID) {
			first = 1
		}
	}
	path, pname := collector.Truncate(ev.Path, e.maxLen), collector.Truncate(ev.Process.Name, e.maxLen)
	head, tail := normalize(path, osName)
	var hits []string
	for _, r := range e.rules {
		if r.kinds&(1<<ev.Kind) == 0 || (r.os != OSAny && r.os != osName) {
			continue
		}
		if r.firstWrite && first != 1 {
			continue
		}
		if len(r.paths) > 0 && !anyMatch(r.paths, head, tail) {
			continue
		}
		if anyMatch(r.exclPaths, head, tail) {
			continue
		}
		if len(r.procs) > 0 && !anyMatch(r.procs, "", pname) {
			continue
		}
		if anyMatch(r.exclProcs, "", pname) {
			continue
		}
		if r.burst != nil && !r.burst.hit(domain, ev.Process.PID, ev.Time) {
			continue
		}
		if hits == nil {
			hits = r.names
		} else {
			// A second hit: copy, never append to a rule's own slice.
			hits = append(slices.Clip(hits), r.cfg.Name)
		}
	}
	return hits
}

func anyMatch(gs []*glob, head, tail string) bool {
	for _, g := range gs {
		if g.match(head, tail) {
			return true
		}
	}
	return false
}

// normalize returns a Windows path as head+tail in the form rules are
// written in: a path from the volume root ("\Windows\System32\x"), with
// the NT device or DOS drive prefix removed, and \SystemRoot as \Windows.
// Separators and case are left to the matcher. Other paths are returned
// as they are.
func normalize(p, osName string) (head, tail string) {
	if osName != OSWindows {
		return "", p
	}
	const dev = `\device\`
	switch {
	case hasPrefixFold(p, dev):
		// \Device\HarddiskVolume2\Windows\... -> \Windows\...
		rest := p[len(dev):]
		if i := strings.IndexAny(rest, `\/`); i >= 0 {
			return "", rest[i:]
		}
		return "", `\`
	case hasPrefixFold(p, `\systemroot\`):
		return `\Windows`, p[len(`\systemroot`):]
	case hasPrefixFold(p, `\??\`), hasPrefixFold(p, `\\?\`), hasPrefixFold(p, `\\.\`):
		p = p[4:]
	}
	// C:\Windows\... -> \Windows\...
	if len(p) >= 2 && p[1] == ':' && ('a' <= foldByte(p[0]) && foldByte(p[0]) <= 'z') {
		p = p[2:]
	}
	return "", p
}

// hasPrefixFold reports whether s starts with prefix (lower case),
// ignoring ASCII case and reading '/' as '\'.
func hasPrefixFold(s, prefix string) bool {
	if len(s) < len(prefix) {
		return false
	}
	for i := 0; i < len(prefix); i++ {
		c := foldByte(s[i])
		if c == '/' {
			c = '\\'
		}
		if c != prefix[i] {
			return false
		}
	}
	return true
}

// procKey is a process of a guest.
type procKey struct {
	domain string
	pid    uint64
}

// procTable remembers processes whose start was seen and that have not
// written yet: a bounded LRU, in a fixed ring so that it never grows.
type procTable struct {
	mu   sync.Mutex
	idx  map[procKey]int // slot in ring
	ring []procKey
	next int
}

func newProcTable(n int) *procTable {
	return &procTable{idx: make(map[procKey]int, n), ring: make([]procKey, n)}
}

func (t *procTable) started(domain string, pid uint64) {
	k := procKey{domain, pid}
	t.mu.Lock()
	defer t.mu.Unlock()
	if i, ok := t.idx[k]; ok {
		// A reused pid: forget the old entry's slot.
		t.ring[i] = procKey{}
	}
	// Evict whoever holds the next slot (the oldest entry).
	if old := t.ring[t.next]; old != (procKey{}) {
		if t.idx[old] == t.next {
			delete(t.idx, old)
		}
	}
	t.ring[t.next] = k
	t.idx[k] = t.next
	t.next = (t.next + 1) % len(t.ring)
}

// firstWrite reports whether pid is a process seen starting that had not
// written yet, and forgets it.
func (t *procTable) firstWrite(domain string, pid uint64) bool {
	k := procKey{domain, pid}
	t.mu.Lock()
	defer t.mu.Unlock()
	i, ok := t.idx[k]
	if !ok {
		return false
	}
	delete(t.idx, k)
	t.ring[i] = procKey{}
	return true
}

func (t *procTable) exited(domain string, pid uint64) {
	t.firstWrite(domain, pid)
}

// Len returns how many processes are waiting for their first write.
func (t *procTable) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.idx)
}

// burstTable counts, per process, a burst rule's matches in the current
// window: a bounded map (at most max processes; when full, expired windows
// go first, then the oldest).
type burstTable struct {
	mu        sync.Mutex
	m         map[procKey]burst
	max, need int
	window    time.Duration
}

type burst struct {
	start time.Time
	n     int
}

func newBurstTable(max, need int, window time.Duration) *burstTable {
	return &burstTable{m: make(map[procKey]burst), max: max, need: need, window: window}
}

// hit counts a match of the process at t and reports whether it is the
// need-th or a later one of its window.
func (b *burstTable) hit(domain string, pid uint64, t time.Time) bool {
	k := procKey{domain, pid}
	b.mu.Lock()
	defer b.mu.Unlock()
	s, ok := b.m[k]
	if !ok || t.Sub(s.start) > b.window || t.Before(s.start) {
		if !ok && len(b.m) >= b.max {
			b.evict(t)
		}
		s = burst{start: t}
	}
	s.n++
	b.m[k] = s
	return s.n >= b.need
}

// evict makes room: windows that ended by t, else the oldest one.
func (b *burstTable) evict(t time.Time) {
	var oldest procKey
	var oldestStart time.Time
	for k, s := range b.m {
		if t.Sub(s.start) > b.window {
			delete(b.m, k)
			continue
		}
		if oldestStart.IsZero() || s.start.Before(oldestStart) {
			oldest, oldestStart = k, s.start
		}
	}
	if len(b.m) >= b.max {
		delete(b.m, oldest)
	}
}
