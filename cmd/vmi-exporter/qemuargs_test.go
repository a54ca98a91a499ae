package main

import (
	"bytes"
	"encoding/xml"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/vmi-exporter/vmi-exporter/internal/config"
)

// TestQEMUArgs: the three forms say the same thing: the shell line and the
// libvirt snippet carry the same arguments in order, the snippet is XML,
// and the config entry, read as the exporter reads its file, names the
// files the arguments make.
func TestQEMUArgs(t *testing.T) {
	run := func(args ...string) string {
		t.Helper()
		var out, errb bytes.Buffer
		if err := qemuArgsCmd(args, &out, &errb); err != nil {
			t.Fatalf("qemu-args %v: %v (%s)", args, err, errb.String())
		}
		return out.String()
	}
	line := strings.TrimSpace(run("--name", "web1", "--format", "args", "--hold-ms", "50"))
	for _, want := range []string{
		"mem-path=/dev/shm/web1.ram,share=on",
		"-plugin /usr/lib/vmi-exporter/libvmi-hooks.so,shm=/dev/shm/web1.hooks,hold_ms=50",
		"-qmp unix:/run/vmi-exporter/qemu/web1.qmp,server=on,wait=off",
		"path=/run/vmi-exporter/qemu/web1.gdb,server=on,wait=off -gdb chardev:vmi-gdb",
	} {
		if !strings.Contains(line, want) {
			t.Errorf("args %q lack %q", line, want)
		}
	}

	var cl struct {
		Args []struct {
			Value string `xml:"value,attr"`
		} `xml:"arg"`
	}
	if err := xml.Unmarshal([]byte(run("--name", "web1", "--format", "libvirt", "--hold-ms", "50")), &cl); err != nil {
		t.Fatalf("libvirt snippet: %v", err)
	}
	var vals []string
	for _, a := range cl.Args {
		vals = append(vals, a.Value)
	}
	if got := shellJoin(vals); got != line {
		t.Errorf("libvirt arguments\n%s\nwant the shell line's\n%s", got, line)
	}

	var c config.Config
	if err := yaml.Unmarshal([]byte(run("--name", "web1", "--format", "config")), &c); err != nil {
		t.Fatal(err)
	}
	if len(c.Guests) != 1 || c.Guests[0].QEMU.PluginSHM != "/dev/shm/web1.hooks" || c.Guests[0].QEMU.GDBSocket != "/run/vmi-exporter/qemu/web1.gdb" {
		t.Fatalf("config entry %+v", c.Guests)
	}

	noPlugin := run("--name", "kvm1", "--no-plugin", "--format", "all")
	if strings.Contains(noPlugin, "-plugin") || strings.Contains(noPlugin, "plugin_shm") {
		t.Errorf("--no-plugin still names the plugin:\n%s", noPlugin)
	}
	for _, bad := range [][]string{{"--no-plugin", "--no-gdb"}, {"--name", "a,b"}, {"--format", "xml"}} {
		if err := qemuArgsCmd(bad, &bytes.Buffer{}, &bytes.Buffer{}); err == nil {
			t.Errorf("qemu-args %v accepted", bad)
		}
	}
}
