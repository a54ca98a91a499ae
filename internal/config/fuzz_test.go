package config_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/spf13/pflag"

	"github.com/vmi-exporter/vmi-exporter/internal/config"
)

// FuzzLoad: any configuration file loads or is refused with an error; it
// never panics (koanf, the YAML parser, Validate and the rules compiler
// all see it).
func FuzzLoad(f *testing.F) {
	f.Add([]byte(guests))
	f.Add([]byte(guests + "rules:\n  - name: x\n    paths: ['/tmp/**']\n    processes: ['*']\n"))
	f.Add([]byte("web: {listen_address: ':1'}\nqueues: {size: 0, bytes: -1}\nlimits: {max_string_len: 1}\n"))
	f.Add([]byte("guests: [{name: a, driver: xen, xen: {domain: a}}, {name: a}]\notlp: {endpoint: 'http://u:p@h', headers: {a: b}}\n"))
	f.Add([]byte("- [\n"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(dir, "c.yaml")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		fs := pflag.NewFlagSet("fuzz", pflag.ContinueOnError)
		config.Flags(fs)
		if err := fs.Parse([]string{"--config", path}); err != nil {
			t.Fatal(err)
		}
		config.Load(fs, []string{})
	})
}
