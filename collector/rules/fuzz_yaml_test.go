package rules

import (
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/vmi-exporter/vmi-exporter/collector"
)

// FuzzRulesYAML: any rules: list decodes and compiles or is refused with
// an error, never a panic; a compiled engine matches without one.
func FuzzRulesYAML(f *testing.F) {
	f.Add([]byte("- name: a\n  paths: ['/etc/**']\n"))
	f.Add([]byte("- name: b\n  os: windows\n  kinds: [file.create, file.write]\n  paths: ['\\\\Windows\\\\**\\\\*.dll']\n  exclude_processes: [TrustedInstaller.exe]\n"))
	f.Add([]byte("- name: c\n  first_write_by_new_process: true\n  severity: critical\n"))
	f.Add([]byte("- name: linux-etc\n  enabled: false\n"))
	f.Add([]byte("- {name: d, paths: ['[', '**/**/**/*?*']}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var raw []map[string]any
		if yaml.Unmarshal(data, &raw) != nil {
			return
		}
		user, err := Decode(raw)
		if err != nil {
			return
		}
		e, err := New(Merge(Defaults(), user), Options{})
		if err != nil {
			return
		}
		for _, ev := range fuzzEvents {
			e.Match(ev)
		}
	})
}

// fuzzEvents are matched by every engine FuzzRulesYAML compiles.
var fuzzEvents = []*collector.Event{
	{Kind: collector.KindFileWrite, Guest: &collector.Guest{Domain: "l", OS: OSLinux}, Path: "/etc/passwd", Process: collector.Process{PID: 1, Name: "sh"}},
	{Kind: collector.KindFileCreate, Guest: &collector.Guest{Domain: "w", OS: OSWindows}, Path: `\Device\HarddiskVolume2\Windows\System32\x.dll`, Process: collector.Process{PID: 4, Name: "evil.exe"}},
	{Kind: collector.KindProcessStart, Guest: &collector.Guest{Domain: "l", OS: OSLinux}, Process: collector.Process{PID: 9}},
	{Kind: collector.KindFileWrite, Guest: &collector.Guest{Domain: "l", OS: OSLinux}, Path: "/tmp/x", Process: collector.Process{PID: 9}},
}
