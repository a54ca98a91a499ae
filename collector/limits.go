package collector

import "unicode/utf8"

// DefaultMaxStringLen is the Limits.MaxStringLen used when it is 0: long
// enough for any real path or process name (Linux PATH_MAX is 4096), short
// enough that a guest cannot make one event cost more than a few KiB
// anywhere downstream (a Windows UNICODE_STRING reaches 64 KiB, an object
// name chain about 1.6 MB).
const DefaultMaxStringLen = 4096

// Names of the event fields that can be truncated: the values of
// Event.Truncated and of the field label of the truncation counter.
const (
	FieldPath         = "path"
	FieldProcessName  = "process.name"
	FieldProcessImage = "process.image"
	FieldOldPath      = "old_path"
	FieldSyscall      = "syscall"
	FieldArgs         = "args"
)

// Limits bound what a guest controls in an event.
type Limits struct {
	// MaxStringLen caps, in bytes, every guest-controlled string of an
	// event (path, old path, syscall family, process name and image, and
	// argv in all) before enrichers, rules,
	// metrics and exporters see it (DefaultMaxStringLen if 0; negative:
	// no cap).
	MaxStringLen int `koanf:"max_string_len" yaml:"max_string_len"`
}

func (l Limits) maxString() int {
	if l.MaxStringLen == 0 {
		return DefaultMaxStringLen
	}
	return l.MaxStringLen
}

// capEvent truncates the guest-controlled strings of ev to max bytes,
// records the fields it cut in ev.Truncated and returns how many it cut.
func capEvent(ev *Event, max int) int {
	if max < 0 {
		return 0
	}
	n := 0
	for _, f := range [...]struct {
		name string
		s    *string
	}{{FieldPath, &ev.Path}, {FieldOldPath, &ev.OldPath}, {FieldSyscall, &ev.Syscall},
		{FieldProcessName, &ev.Process.Name}, {FieldProcessImage, &ev.Process.Image}} {
		if len(*f.s) > max {
			*f.s = Truncate(*f.s, max)
			ev.Truncated = append(ev.Truncated, f.name)
			n++
		}
	}
	// argv is bounded by the probe (count and bytes, Event.ArgsTruncated);
	// here it shares the one cap on what a single event may carry.
	total, cut := 0, false
	for i, a := range ev.Args {
		if total+len(a) > max {
			ev.Args[i] = Truncate(a, max-total)
			ev.Args = ev.Args[:i+1]
			cut = true
			break
		}
		total += len(a)
	}
	if cut {
		ev.ArgsTruncated = true
		ev.Truncated = append(ev.Truncated, FieldArgs)
		n++
	}
	return n
}

// Truncate returns s cut to at most max bytes, at a UTF-8 character
// boundary when s is valid UTF-8 there, so that the cut does not make a
// valid string invalid.
func Truncate(s string, max int) string {
	if len(s) <= max {
		return s
	}
	if max <= 0 {
		return ""
	}
	i := max
	// Back off over at most 3 continuation bytes to the start of the
	// character the cut falls in.
	for j := 0; j < utf8.UTFMax-1 && i > 0 && !utf8.RuneStart(s[i]); j++ {
		i--
	}
	if !utf8.RuneStart(s[i]) {
		i = max // not UTF-8 there anyway: cut at the byte
	}
	return s[:i]
}
