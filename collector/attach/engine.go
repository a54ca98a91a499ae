package attach

import (
	"fmt"
	"log/slog"

	"github.com/vmi-exporter/vmi-exporter/introspect/driver"
	"github.com/vmi-exporter/vmi-exporter/introspect/hook"
	"github.com/vmi-exporter/vmi-exporter/introspect/paging"
)

// engineChoice is a hook engine and the driver capability it needs.
type engineChoice struct {
	name string
	why  string // logged when chosen
	has  func(d driver.Driver) bool
	new  func(d driver.Driver, mem *paging.Memory, log *slog.Logger) (hook.Engine, error)
}

// engines are the hook engines by preference: the first whose capability
// the driver has runs the guest's hooks. Views hide the hooks best (the
// guest reads its own bytes) and survive paging; native breakpoints are
// the hypervisor's own, invisible but one stop per hit. The plugin's hooks
// are invisible too and stop only the hitting vCPU. A new engine is one
// entry here, checked by its driver capability, placed by how it compares.
var engines = []engineChoice{
	{
		name: "views",
		why:  "the driver has alternate views: hidden INT3s in shadow frames of a private view",
		has:  driver.Has[hook.ViewsDriver],
		new: func(d driver.Driver, mem *paging.Memory, log *slog.Logger) (hook.Engine, error) {
			return hook.NewViews(d, hook.ViewsOptions{Mode: mem.Mode, Cache: mem.Cache, Logger: log})
		},
	},
	{
		name: "plugin",
		why:  "the hypervisor instruments hooked addresses itself and holds only the hitting vCPU (QEMU's vmi-hooks TCG plugin)",
		has:  driver.Has[driver.HookTable],
		new: func(d driver.Driver, mem *paging.Memory, _ *slog.Logger) (hook.Engine, error) {
			return hook.NewPlugin(d.(driver.HookTable), hook.WithPluginFlush(mem.Cache.Flush)), nil
		},
	},
	{
		name: "native",
		why:  "the driver sets breakpoints of its own and reports their hits",
		has:  driver.Has[hook.NativeDriver],
		new: func(d driver.Driver, mem *paging.Memory, _ *slog.Logger) (hook.Engine, error) {
			return hook.NewNative(d.(hook.NativeDriver), hook.WithFlush(mem.Cache.Flush)), nil
		},
	},
}

// newEngine builds the first engine of engines that d supports, and says
// which and why.
func newEngine(d driver.Driver, mem *paging.Memory, log *slog.Logger) (hook.Engine, string, error) {
	for _, e := range engines {
		if !e.has(d) {
			continue
		}
		eng, err := e.new(d, mem, log)
		if err != nil {
			return nil, "", fmt.Errorf("%s hook engine: %w", e.name, err)
		}
		log.Info("hook engine chosen", "engine", e.name, "why", e.why)
		return eng, e.name, nil
	}
	return nil, "", fmt.Errorf("no hook engine for this driver (it has neither views nor breakpoints with events): %w", driver.ErrUnsupported)
}
