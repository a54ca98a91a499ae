// Package config loads the vmi-exporter configuration with koanf from, in
// increasing precedence: built-in defaults, a YAML file (--config),
// VMI_EXPORTER_* environment variables (a double underscore nests:
// VMI_EXPORTER_WEB__LISTEN_ADDRESS is web.listen_address) and command-line
// flags; then validates it.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/confmap"
	"github.com/knadh/koanf/providers/env/v2"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/providers/posflag"
	"github.com/knadh/koanf/v2"
	"github.com/prometheus/exporter-toolkit/web"
	"github.com/spf13/pflag"

	"github.com/vmi-exporter/vmi-exporter/collector"
	"github.com/vmi-exporter/vmi-exporter/collector/attach"
	"github.com/vmi-exporter/vmi-exporter/collector/rules"
	"github.com/vmi-exporter/vmi-exporter/internal/redact"
)

// DefaultListenAddress is where /metrics is served by default: loopback
// only, as the metrics (plain HTTP, no auth unless web.config_file says
// otherwise) name guests, kernels and processes. Serving other hosts is a
// choice made in the configuration (the Helm chart sets the pod address).
// 9860 is not taken in the Prometheus default port allocations list as
// far as we know.
const DefaultListenAddress = "127.0.0.1:9860"

// EnvPrefix starts every environment variable the configuration reads.
const EnvPrefix = "VMI_EXPORTER_"

// Config is the whole configuration.
type Config struct {
	Web     Web                     `koanf:"web"`
	Guests  []collector.GuestConfig `koanf:"guests"`
	Probes  []string                `koanf:"probes"` // enabled event kinds: the names of collector.ProbeKinds
	OTLP    OTLP                    `koanf:"otlp"`
	JSONL   JSONL                   `koanf:"jsonl"`
	Metrics Metrics                 `koanf:"metrics"`
	Queues  Queues                  `koanf:"queues"`
	Limits  collector.Limits        `koanf:"limits"`
	Backoff collector.Backoff       `koanf:"backoff"`
	Verify  Verify                  `koanf:"verify"`
	Log     Log                     `koanf:"log"`
	// Rules are suspicious-write rules applied over the default set
	// (collector/rules: decoded and compiled by Validate and the command).
	Rules []map[string]any `koanf:"rules"`
}

// Verify configures the check, while a guest is watched, that it still runs
// the kernel the exporter attached to (a reboot moves the kernel).
type Verify struct {
	// Interval between checks (default collector.DefaultVerifyInterval);
	// 0 disables them, in the collector as here.
	Interval time.Duration `koanf:"interval"`
}

// Web configures the metrics server.
type Web struct {
	ListenAddress string `koanf:"listen_address"`
	// ConfigFile is an exporter-toolkit web configuration (TLS, basic auth).
	ConfigFile string `koanf:"config_file"`
	// EnablePprof serves the Go runtime's profiles at /debug/pprof/ (off by
	// default: they reveal the exporter's internals and cost CPU).
	EnablePprof bool `koanf:"enable_pprof"`
}

// OTLP configures trace export.
type OTLP struct {
	// Endpoint is host:port or a URL; empty writes spans to File, and
	// with no File either, traces are off.
	Endpoint         string            `koanf:"endpoint"`
	Protocol         string            `koanf:"protocol"` // grpc or http
	Insecure         bool              `koanf:"insecure"`
	Headers          map[string]string `koanf:"headers"`
	File             string            `koanf:"file"`
	MaxOpenProcesses int               `koanf:"max_open_processes"`
	// MaxMessageBytes is the receiver's message limit; batches are split
	// to fit it.
	MaxMessageBytes int `koanf:"max_message_bytes"`
}

// JSONL configures the JSON-lines event log.
type JSONL struct {
	// Path is a file, "-" for stdout, or empty for none.
	Path string `koanf:"path"`
}

// Metrics configures the Prometheus metrics.
type Metrics struct {
	// ProcessLabelCap > 0 enables vmi_process_events_total with at most
	// this many process names. Off by default.
	ProcessLabelCap int `koanf:"process_label_cap"`
}

// Queues configures the exporter queues.
type Queues struct {
	Size int `koanf:"size"`
	// Bytes bounds each queue by the estimated memory of its events.
	Bytes int64 `koanf:"bytes"`
}

// Log configures logging.
type Log struct {
	Level  string `koanf:"level"`  // debug, info, warn, error
	Format string `koanf:"format"` // logfmt (or text, the same) or json
}

// Defaults returns the built-in configuration as koanf keys.
func Defaults() map[string]any {
	return map[string]any{
		"web.listen_address":        DefaultListenAddress,
		"web.config_file":           "",
		"web.enable_pprof":          false,
		"probes":                    ProbeNames(),
		"otlp.endpoint":             "",
		"otlp.protocol":             "grpc",
		"otlp.insecure":             false,
		"otlp.file":                 "",
		"otlp.max_open_processes":   10000,
		"otlp.max_message_bytes":    4 << 20,
		"jsonl.path":                "",
		"metrics.process_label_cap": 0,
		"queues.size":               collector.DefaultQueueSize,
		"queues.bytes":              collector.DefaultQueueBytes,
		"limits.max_string_len":     collector.DefaultMaxStringLen,
		"backoff.initial":           "1s",
		"backoff.max":               "1m",
		"backoff.jitter":            0.2,
		"verify.interval":           collector.DefaultVerifyInterval.String(),
		"log.level":                 "info",
		"log.format":                "text",
	}
}

// Flags registers the flags Load reads on fs. A flag name is its key with
// "-" for "_" (--web.listen-address sets web.listen_address).
func Flags(fs *pflag.FlagSet) {
	fs.String("config", "", "YAML configuration file")
	fs.String("web.listen-address", DefaultListenAddress, "address to serve /metrics on")
	fs.String("web.config.file", "", "exporter-toolkit web configuration file (TLS, basic auth)")
	fs.String("web.config-file", "", "exporter-toolkit web configuration file (TLS, basic auth)")
	// The Prometheus exporters' name is --web.config.file.
	_ = fs.MarkDeprecated("web.config-file", "use --web.config.file")
	fs.Bool("web.enable-pprof", false, "serve Go profiles at /debug/pprof/ and link them from the landing page")
	fs.StringSlice("probes", nil, "event kinds to watch ("+strings.Join(ProbeNames(), ",")+")")
	fs.String("otlp.endpoint", "", "OTLP receiver (host:port or URL); empty writes spans to --otlp.file")
	fs.String("otlp.protocol", "grpc", "OTLP protocol: grpc or http")
	fs.Bool("otlp.insecure", false, "OTLP without TLS")
	fs.Int("otlp.max-message-bytes", 4<<20, "OTLP receiver's message limit: span batches are split to fit it")
	fs.String("otlp.file", "", "file for spans (JSON lines) when no OTLP endpoint is set")
	fs.String("jsonl.path", "", `JSON-lines event log: a file, or "-" for stdout`)
	fs.Int("metrics.process-label-cap", 0, "enable vmi_process_events_total with at most this many process names")
	fs.Int("queues.size", collector.DefaultQueueSize, "events each exporter queue holds before dropping")
	fs.Int64("queues.bytes", collector.DefaultQueueBytes, "estimated bytes of events each exporter queue holds before dropping")
	fs.Int("limits.max-string-len", collector.DefaultMaxStringLen, "bytes kept of each guest-controlled event string (path, process name); longer ones are truncated and counted")
	fs.Duration("backoff.initial", time.Second, "first delay before re-attaching a guest")
	fs.Duration("backoff.max", time.Minute, "longest delay before re-attaching a guest")
	fs.Duration("verify.interval", collector.DefaultVerifyInterval, "how often to check that a watched guest was not rebooted (0: never)")
	fs.String("log.level", "info", "log level: debug, info, warn, error")
	fs.String("log.format", "text", "log format: logfmt (text is the same) or json")
}

// Load reads the configuration: defaults, then the YAML file named by the
// parsed --config flag, then environ (VMI_EXPORTER_* entries, os.Environ
// when nil), then the flags the user set. It validates the result.
func Load(fs *pflag.FlagSet, environ []string) (*Config, error) {
	k := koanf.New(".")
	if err := k.Load(confmap.Provider(Defaults(), "."), nil); err != nil {
		return nil, fmt.Errorf("config defaults: %w", err)
	}
	if f := fs.Lookup("config"); f != nil && f.Value.String() != "" {
		if err := k.Load(file.Provider(f.Value.String()), yaml.Parser()); err != nil {
			return nil, fmt.Errorf("config file %s: %w", f.Value.String(), err)
		}
	}
	if environ == nil {
		environ = os.Environ()
	}
	err := k.Load(env.Provider(".", env.Opt{
		Prefix:      EnvPrefix,
		EnvironFunc: func() []string { return environ },
		TransformFunc: func(key, v string) (string, any) {
			key = strings.ToLower(strings.TrimPrefix(key, EnvPrefix))
			key = strings.ReplaceAll(key, "__", ".")
			if key == "probes" {
				return key, strings.Split(v, ",")
			}
			return key, v
		},
	}), nil)
	if err != nil {
		return nil, fmt.Errorf("config environment: %w", err)
	}
	err = k.Load(posflag.ProviderWithFlag(fs, ".", k, func(f *pflag.Flag) (string, any) {
		if !f.Changed || f.Name == "config" {
			return "", nil
		}
		return flagKey(f.Name), posflag.FlagVal(fs, f)
	}), nil)
	if err != nil {
		return nil, fmt.Errorf("config flags: %w", err)
	}
	var c Config
	if err := k.UnmarshalWithConf("", &c, koanf.UnmarshalConf{Tag: "koanf"}); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c.setGuestDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// flagKey is the configuration key a flag sets: its name with "-" for
// "_", but for the names of web.config_file (the Prometheus
// --web.config.file and the deprecated --web.config-file).
func flagKey(name string) string {
	switch name {
	case "web.config.file", "web.config-file":
		return "web.config_file"
	}
	return strings.ReplaceAll(name, "-", "_")
}

func (c *Config) setGuestDefaults() {
	for i := range c.Guests {
		g := &c.Guests[i]
		if g.Driver == "" {
			g.Driver = attach.DefaultBackend
		}
		if g.OS == "" {
			g.OS = "auto"
		}
	}
}

// ProbeNames names the event kinds the probes list accepts, all enabled by
// default: those of collector.ProbeKinds.
func ProbeNames() []string { return collector.KindNames(collector.ProbeKinds()) }

// Kinds returns the enabled probe kinds (valid after Validate).
func (c *Config) Kinds() []collector.Kind {
	var ks []collector.Kind
	for _, p := range c.Probes {
		k, _ := collector.ParseKind(p)
		ks = append(ks, k)
	}
	return ks
}

// Validate reports every problem of the configuration at once.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }

	if err := checkListen(c.Web.ListenAddress); err != nil {
		bad("web.listen_address: %w", err)
	}
	if c.Web.ConfigFile != "" {
		if err := web.Validate(c.Web.ConfigFile); err != nil {
			bad("web.config_file: %w", err)
		}
	}
	errs = append(errs, c.ValidateGuests()...)
	if len(c.Probes) == 0 {
		bad("probes: none enabled")
	}
	names := ProbeNames()
	for _, p := range c.Probes {
		if !slices.Contains(names, p) {
			bad("probes: unknown probe kind %q (known: %s)", p, strings.Join(names, ", "))
		}
	}
	switch c.OTLP.Protocol {
	case "grpc", "http":
	default:
		bad("otlp.protocol: %q is neither grpc nor http", c.OTLP.Protocol)
	}
	if e := c.OTLP.Endpoint; e != "" {
		if strings.Contains(e, "://") {
			u, err := url.Parse(e)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				bad("otlp.endpoint: %q is not an http(s) URL", redact.URL(e))
			}
		} else if err := checkHostPort(e); err != nil {
			bad("otlp.endpoint: %w", err)
		}
	}
	if c.OTLP.MaxOpenProcesses < 1 {
		bad("otlp.max_open_processes: must be at least 1, got %d", c.OTLP.MaxOpenProcesses)
	}
	if n := c.OTLP.MaxMessageBytes; n != 0 && n < 64<<10 {
		bad("otlp.max_message_bytes: %d is under %d", n, 64<<10)
	}
	if n := c.Metrics.ProcessLabelCap; n < 0 || n > 10000 {
		bad("metrics.process_label_cap: %d is outside 0..10000", n)
	}
	if n := c.Queues.Size; n < 1 || n > 1<<20 {
		bad("queues.size: %d is outside 1..%d", n, 1<<20)
	}
	// 0 is the default for the limits below (configurations built in code).
	if n := c.Queues.Bytes; n != 0 && (n < 64<<10 || n > 1<<34) {
		bad("queues.bytes: %d is outside %d..%d", n, 64<<10, int64(1)<<34)
	}
	if n := c.Limits.MaxStringLen; n != 0 && (n < 64 || n > 1<<20) {
		bad("limits.max_string_len: %d is outside 64..%d", n, 1<<20)
	}
	if c.Verify.Interval < 0 {
		bad("verify.interval: must not be negative, got %s", c.Verify.Interval)
	}
	if c.Backoff.Initial <= 0 {
		bad("backoff.initial: must be positive, got %s", c.Backoff.Initial)
	}
	if c.Backoff.Max < c.Backoff.Initial {
		bad("backoff.max: %s is shorter than backoff.initial %s", c.Backoff.Max, c.Backoff.Initial)
	}
	if j := c.Backoff.Jitter; j < 0 || j >= 1 {
		bad("backoff.jitter: %g is outside [0,1)", j)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level: unknown level %q", c.Log.Level)
	}
	switch c.Log.Format {
	case "logfmt", "text", "json":
	default:
		bad("log.format: %q is neither logfmt (text) nor json", c.Log.Format)
	}
	for i, r := range c.Rules {
		if n, _ := r["name"].(string); n == "" {
			bad("rules[%d]: no name", i)
		}
	}
	if user, err := rules.Decode(c.Rules); err != nil {
		errs = append(errs, err)
	} else if _, err := rules.New(rules.Merge(rules.Defaults(), user), rules.Options{}); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// ValidateGuests checks the guest list. An empty list is valid: the
// daemon then serves its own metrics and waits (a DaemonSet pod on a host
// without guests). What only the host can tell, such as whether a guest's
// RAM file or sockets exist, is checked when the guest is attached, so
// that a guest absent from this host is down (with a reason) rather than
// a configuration error.
func (c *Config) ValidateGuests() []error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	seen := map[string]bool{}
	for i, g := range c.Guests {
		where := fmt.Sprintf("guests[%d]", i)
		if g.Name == "" {
			bad("%s: no name", where)
		} else {
			where = fmt.Sprintf("guests[%d] (%s)", i, g.Name)
			if seen[g.Name] {
				bad("%s: name used twice", where)
			}
			seen[g.Name] = true
			if !validName(g.Name) {
				bad("%s: name must be 1-64 letters, digits, '.', '_' or '-'", where)
			}
		}
		for _, err := range attach.ValidateGuest(g) {
			bad("%s: %w", where, err)
		}
		switch g.OS {
		case "linux", "windows", "auto":
		default:
			bad("%s: os %q is not linux, windows or auto", where, g.OS)
		}
		for key, p := range map[string]string{"profile.system_map": g.Profile.SystemMap, "profile.isf": g.Profile.ISF, "profile.kernel_image": g.Profile.KernelImage} {
			if p == "" {
				continue
			}
			if _, err := os.Stat(p); err != nil {
				bad("%s: %s: %w", where, key, err)
			}
		}
	}
	return errs
}

func validName(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

func checkListen(a string) error {
	if a == "" {
		return errors.New("empty")
	}
	_, port, err := net.SplitHostPort(a)
	if err != nil {
		return err
	}
	return checkPort(port)
}

func checkHostPort(a string) error {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return err
	}
	if host == "" {
		return fmt.Errorf("%q has no host", a)
	}
	return checkPort(port)
}

func checkPort(p string) error {
	n, err := strconv.Atoi(p)
	if err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("bad port %q", p)
	}
	return nil
}
