package main

import (
	"encoding/xml"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"

	"github.com/vmi-exporter/vmi-exporter/collector"
)

// qemuArgsCmd prints what a QEMU guest needs to be watched: its QEMU
// arguments (the vmi-hooks plugin, RAM in a shared file, QMP, and a
// gdbstub as the fallback engine), the same as a libvirt
// <qemu:commandline> snippet, and the exporter's guests: entry that
// points at them. It only prints; it starts nothing.
func qemuArgsCmd(args []string, stdout, stderr io.Writer) error {
	fs := pflag.NewFlagSet("vmi-exporter qemu-args", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	name := fs.String("name", "vm1", "the guest's name (domain label; names the files)")
	dir := fs.String("dir", "/run/vmi-exporter/qemu", "directory of the guest's sockets")
	ramDir := fs.String("ram-dir", "/dev/shm", "directory of the shared RAM file and the plugin's file (RAM-backed)")
	mem := fs.String("memory", "1G", "guest RAM size, as QEMU's -m takes it (must equal -m)")
	plugin := fs.String("plugin", "/usr/lib/vmi-exporter/libvmi-hooks.so", "the vmi-hooks plugin (scripts/build-qemu-plugin.sh builds it)")
	noPlugin := fs.Bool("no-plugin", false, "leave the plugin out (KVM guests, QEMU before 10.0): hooks then stop the whole guest through the gdbstub")
	noGDB := fs.Bool("no-gdb", false, "leave the gdbstub out (only with the plugin)")
	holdMS := fs.Int("hold-ms", 0, "plugin hold deadline in ms (0: the plugin's default, 20)")
	format := fs.String("format", "all", "what to print: args (a shell line), libvirt (<qemu:commandline>), config (the exporter's guests: entry) or all")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("qemu-args: unexpected arguments %q", fs.Args())
	}
	if *noPlugin && *noGDB {
		return fmt.Errorf("qemu-args: --no-plugin and --no-gdb leave no way to hook the guest")
	}
	if strings.ContainsAny(*name, "/, \t\n") {
		return fmt.Errorf("qemu-args: --name %q: no slash, comma or space (it names files and QEMU options)", *name)
	}
	g := collector.GuestConfig{Name: *name, Driver: "qemu", OS: "auto", QEMU: collector.QEMUConfig{
		QMPSocket: filepath.Join(*dir, *name+".qmp"),
		RAMPath:   filepath.Join(*ramDir, *name+".ram"),
	}}
	qa := []string{
		"-object", fmt.Sprintf("memory-backend-file,id=vmi-ram,size=%s,mem-path=%s,share=on", *mem, g.QEMU.RAMPath),
		"-machine", "memory-backend=vmi-ram",
		"-qmp", fmt.Sprintf("unix:%s,server=on,wait=off", g.QEMU.QMPSocket),
	}
	if !*noPlugin {
		g.QEMU.PluginSHM = filepath.Join(*ramDir, *name+".hooks")
		p := *plugin + ",shm=" + g.QEMU.PluginSHM
		if *holdMS > 0 {
			p += fmt.Sprintf(",hold_ms=%d", *holdMS)
		}
		qa = append(qa, "-plugin", p)
	}
	if !*noGDB {
		g.QEMU.GDBSocket = filepath.Join(*dir, *name+".gdb")
		qa = append(qa, "-chardev", fmt.Sprintf("socket,id=vmi-gdb,path=%s,server=on,wait=off", g.QEMU.GDBSocket), "-gdb", "chardev:vmi-gdb")
	}
	show := func(f string) bool { return *format == "all" || *format == f }
	switch *format {
	case "all", "args", "libvirt", "config":
	default:
		return fmt.Errorf("qemu-args: --format %q: want args, libvirt, config or all", *format)
	}
	if show("args") {
		if *format == "all" {
			fmt.Fprintln(stdout, "# QEMU arguments (TCG: -accel tcg; the plugin needs QEMU 10.0 or later)")
		}
		fmt.Fprintln(stdout, shellJoin(qa))
	}
	if show("libvirt") {
		if *format == "all" {
			fmt.Fprintln(stdout, "\n# libvirt: inside <domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>;")
			fmt.Fprintln(stdout, "# drop the -object/-machine pair if the domain has its own shared <memoryBacking> (point ram_path at its file)")
		}
		fmt.Fprintln(stdout, "<qemu:commandline>")
		for _, a := range qa {
			var b strings.Builder
			_ = xml.EscapeText(&b, []byte(a))
			fmt.Fprintf(stdout, "  <qemu:arg value='%s'/>\n", strings.ReplaceAll(b.String(), "'", "&#39;"))
		}
		fmt.Fprintln(stdout, "</qemu:commandline>")
	}
	if show("config") {
		if *format == "all" {
			fmt.Fprintln(stdout, "\n# vmi-exporter configuration (guests: entry)")
		}
		// GuestConfig's own yaml keys, the unset ones omitted.
		out, err := yaml.Marshal(map[string]any{"guests": []collector.GuestConfig{g}})
		if err != nil {
			return fmt.Errorf("qemu-args: %w", err)
		}
		fmt.Fprint(stdout, string(out))
	}
	return nil
}

// shellJoin quotes each argument for a POSIX shell where it needs it.
func shellJoin(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if a != "" && strings.Trim(a, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_=,./:+") == "" {
			q[i] = a
			continue
		}
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}
