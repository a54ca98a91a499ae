package config_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/vmi-exporter/vmi-exporter/collector"
	"github.com/vmi-exporter/vmi-exporter/internal/config"
)

func writeFile(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "vmi-exporter.yml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func load(t *testing.T, args []string, environ []string) (*config.Config, error) {
	t.Helper()
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	config.Flags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	if environ == nil {
		environ = []string{}
	}
	return config.Load(fs, environ)
}

const guests = `
guests:
  - name: vm1
    qemu:
      gdb_socket: /run/vm1.gdb
      qmp_socket: /run/vm1.qmp
`

func TestDefaults(t *testing.T) {
	c, err := load(t, []string{"--config", writeFile(t, guests)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Web.ListenAddress != "127.0.0.1:9860" || c.Queues.Size != collector.DefaultQueueSize || c.OTLP.Protocol != "grpc" ||
		c.Backoff.Initial != time.Second || c.Backoff.Max != time.Minute || c.Metrics.ProcessLabelCap != 0 ||
		c.Verify.Interval != collector.DefaultVerifyInterval {
		t.Errorf("defaults %+v", c)
	}
	g := c.Guests[0]
	if g.Driver != "qemu" || g.OS != "auto" || g.QEMU.QMPSocket != "/run/vm1.qmp" {
		t.Errorf("guest %+v", g)
	}
	// Every probe kind is on by default.
	if !slices.Equal(c.Kinds(), collector.ProbeKinds()) {
		t.Errorf("kinds %v, want %v", c.Kinds(), collector.ProbeKinds())
	}
}

// Each source overrides the one before: defaults < file < environment < flags.
func TestPrecedence(t *testing.T) {
	file := writeFile(t, guests+`
web:
  listen_address: "127.0.0.1:1111"
queues:
  size: 10
otlp:
  endpoint: file-host:4317
  headers:
    x-tenant: a
backoff:
  initial: 2s
  max: 30s
probes: [file.write]
rules:
  - name: tmp-writes
    kinds: [file.write]
    paths: [/tmp/*]
`)
	env := []string{
		"VMI_EXPORTER_WEB__LISTEN_ADDRESS=127.0.0.1:2222",
		"VMI_EXPORTER_QUEUES__SIZE=20",
		"VMI_EXPORTER_BACKOFF__MAX=45s",
		"VMI_EXPORTER_PROBES=process.start,process.exit",
		"OTHER_WEB__LISTEN_ADDRESS=ignored:1",
	}
	c, err := load(t, []string{"--config", file, "--web.listen-address", "127.0.0.1:3333"}, env)
	if err != nil {
		t.Fatal(err)
	}
	if c.Web.ListenAddress != "127.0.0.1:3333" {
		t.Errorf("flag lost: %s", c.Web.ListenAddress)
	}
	if c.Queues.Size != 20 || c.Backoff.Max != 45*time.Second {
		t.Errorf("environment lost: %d %s", c.Queues.Size, c.Backoff.Max)
	}
	if c.OTLP.Endpoint != "file-host:4317" || c.OTLP.Headers["x-tenant"] != "a" || c.Backoff.Initial != 2*time.Second {
		t.Errorf("file lost: %+v %+v", c.OTLP, c.Backoff)
	}
	if strings.Join(c.Probes, ",") != "process.start,process.exit" {
		t.Errorf("probes %v", c.Probes)
	}
	if len(c.Rules) != 1 || fmt.Sprint(c.Rules[0]["paths"]) != "[/tmp/*]" {
		t.Errorf("rules %v", c.Rules)
	}

	// A flag left at its default does not override the file.
	c, err = load(t, []string{"--config", file}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Web.ListenAddress != "127.0.0.1:1111" || c.Queues.Size != 10 {
		t.Errorf("file values overridden by flag defaults: %+v", c)
	}
}

func TestValidationErrors(t *testing.T) {
	for _, tc := range []struct {
		name, file string
		args       []string
		want       []string
	}{
		{"unknown probe", guests, []string{"--probes", "file.create,file.shred"}, []string{`unknown probe kind "file.shred"`, "known: file.create"}},
		{"engine kind as probe", guests, []string{"--probes", "page.in"}, []string{`unknown probe kind "page.in"`, "known: file.create"}},
		{"bad listen", guests, []string{"--web.listen-address", "localhost"}, []string{"web.listen_address: address localhost: missing port"}},
		{"bad port", guests, []string{"--web.listen-address", ":99999"}, []string{`web.listen_address: bad port "99999"`}},
		{"bad otlp", guests, []string{"--otlp.endpoint", "collector", "--otlp.protocol", "udp"}, []string{"otlp.endpoint:", `otlp.protocol: "udp"`}},
		{"bad guests", `
guests:
  - name: vm1
    driver: vbox
  - name: vm1
    qemu: {gdb_socket: /x}
    os: plan9
  - name: "bad name"
    driver: xen
  - qemu: {gdb_socket: /y, ram_path: /nonexistent/ram}
    profile: {kernel_image: /nonexistent/vmlinuz}
`, nil, []string{
			"guests[3]: profile.kernel_image: stat /nonexistent/vmlinuz",
			`guests[0] (vm1): driver "vbox" is neither qemu nor xen`,
			"guests[1] (vm1): name used twice",
			`guests[1] (vm1): os "plan9"`,
			"guests[2] (bad name): name must be",
			"guests[2] (bad name): xen.domain is required",
			"guests[3]: no name",
		}},
		{"qemu without gdb", "guests: [{name: a}]", nil, []string{"guests[0] (a): qemu.gdb_socket is required"}},
		{"bad numbers", guests, []string{"--queues.size", "0", "--backoff.initial", "5s", "--backoff.max", "1s", "--metrics.process-label-cap", "-1", "--verify.interval", "-1s", "--queues.bytes", "10", "--limits.max-string-len", "10"},
			[]string{"queues.size: 0", "backoff.max: 1s is shorter", "metrics.process_label_cap: -1", "verify.interval: must not be negative", "queues.bytes: 10", "limits.max_string_len: 10"}},
		{"unnamed rule", guests + "rules: [{paths: [/tmp]}]", nil, []string{"rules[0]: no name"}},
		{"bad rule", guests + "rules: [{name: x, os: bsd, paths: [/tmp]}]", nil, []string{`os "bsd" is not linux, windows or any`}},
		{"unknown rule key", guests + "rules: [{name: x, path: /tmp}]", nil, []string{"field path not found"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := load(t, append([]string{"--config", writeFile(t, tc.file)}, tc.args...), nil)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

// The same configuration serves every host of a fleet: no guests, and a
// guest whose RAM file and sockets are not on this host, are valid (the
// guest is down at attach time, with a reason), where real mistakes stay
// errors.
func TestHostLocalGuestsAreValid(t *testing.T) {
	if _, err := load(t, []string{"--config", writeFile(t, "web: {listen_address: ':9860'}\nguests: []\n")}, nil); err != nil {
		t.Errorf("no guests: %v", err)
	}
	c, err := load(t, []string{"--config", writeFile(t, `
guests:
  - name: absent
    qemu: {gdb_socket: /nonexistent/absent.gdb, qmp_socket: /nonexistent/absent.qmp, ram_path: /nonexistent/ram, plugin_shm: /nonexistent/shm}
`)}, nil)
	if err != nil || len(c.Guests) != 1 {
		t.Errorf("guest absent from this host: %v", err)
	}
	_, err = load(t, []string{"--config", writeFile(t, "guests: [{name: a, qemu: {gdb_socket: /x}, os: plan9}]\n")}, nil)
	if err == nil || !strings.Contains(err.Error(), `os "plan9"`) {
		t.Errorf("bad os: %v", err)
	}
	_, err = load(t, []string{"--config", writeFile(t, "guests: [{name: a, qemu: {plugin_shm: /x}}]\n")}, nil)
	if err == nil || !strings.Contains(err.Error(), "qemu.plugin_shm needs qemu.ram_path") {
		t.Errorf("plugin without RAM file: %v", err)
	}
}

// --web.config.file is the Prometheus name; --web.config-file still works;
// logfmt is a log format; pprof is off unless asked for.
func TestPrometheusFlagNames(t *testing.T) {
	web := writeFile(t, "")
	for _, f := range []string{"--web.config.file", "--web.config-file"} {
		c, err := load(t, []string{"--config", writeFile(t, guests), f, web, "--log.format", "logfmt"}, nil)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if c.Web.ConfigFile != web || c.Log.Format != "logfmt" || c.Web.EnablePprof {
			t.Errorf("%s: %+v %+v", f, c.Web, c.Log)
		}
	}
	c, err := load(t, []string{"--config", writeFile(t, guests), "--web.enable-pprof"}, nil)
	if err != nil || !c.Web.EnablePprof {
		t.Errorf("--web.enable-pprof: %v %+v", err, c)
	}
	if _, err := load(t, []string{"--config", writeFile(t, guests), "--log.format", "xml"}, nil); err == nil || !strings.Contains(err.Error(), "log.format") {
		t.Errorf("log.format xml: %v", err)
	}
}

func TestMissingFile(t *testing.T) {
	_, err := load(t, []string{"--config", "/nonexistent.yml"}, nil)
	if err == nil || !strings.Contains(err.Error(), "config file /nonexistent.yml") {
		t.Fatalf("err %v", err)
	}
}

func TestWebConfigFileValidated(t *testing.T) {
	web := writeFile(t, "basic_auth_users:\n  prom: not-a-bcrypt-hash\n")
	_, err := load(t, []string{"--config", writeFile(t, guests), "--web.config-file", web}, nil)
	if err == nil || !strings.Contains(err.Error(), "web.config_file") {
		t.Fatalf("err %v", err)
	}
}

func TestExampleConfig(t *testing.T) {
	c, err := load(t, []string{"--config", "testdata/example.yml"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Guests) != 2 || c.Guests[1].Xen.Domain != "db-1" || c.Guests[0].QEMU.GDBSocket != "/run/vmi/web-1.gdb" ||
		c.Backoff.Jitter != 0.2 || c.OTLP.File == "" || c.Verify.Interval != 5*time.Second {
		t.Errorf("example config %+v", c)
	}
}

// The chart takes OTLP headers from a Secret through the environment: a
// header set there joins those of the file.
func TestHeadersFromEnvironment(t *testing.T) {
	file := writeFile(t, guests+`
otlp:
  endpoint: otel:4317
  headers:
    x-tenant: a
`)
	c, err := load(t, []string{"--config", file}, []string{"VMI_EXPORTER_OTLP__HEADERS__AUTHORIZATION=Bearer s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	if c.OTLP.Headers["authorization"] != "Bearer s3cret" || c.OTLP.Headers["x-tenant"] != "a" {
		t.Errorf("headers %v", c.OTLP.Headers)
	}
}

// A bad endpoint is named in the error without its password.
func TestEndpointErrorRedacted(t *testing.T) {
	c := &config.Config{OTLP: config.OTLP{Endpoint: "ftp://alice:s3cret@otel.example", Protocol: "http"}}
	if err := c.Validate(); err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("validation error shows the password: %v", err)
	}
}
