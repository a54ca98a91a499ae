// Package attach connects the collector to guests by composition. A
// backend (QEMU, Xen) opens a hypervisor driver from its own section of
// the guest's configuration; the rest is common to every backend: the
// guest's OS is found by the OS layers' own discovery (Linux, then
// Windows, or the one configured), the hook engine is chosen by what the
// driver can do (engines in engine.go: views, then native breakpoints), and the
// session's liveness check combines the driver's (driver.Liveness) with
// the OS layer's. Any backend and OS the driver's capabilities allow work
// together without more wiring.
//
// A backend is a driver plus a registration, in its own file:
//
//	func init() {
//		Register(Backend{
//			Name: "kvmi", // the guests' driver: key
//			Validate: func(g collector.GuestConfig) []error {
//				if g.KVMI.Socket == "" {
//					return []error{errors.New("kvmi.socket is required")}
//				}
//				return nil
//			},
//			Open: func(ctx context.Context, g collector.GuestConfig, log *slog.Logger) (driver.Driver, string, error) {
//				d, err := kvmi.Open(ctx, g.KVMI.Socket, log)
//				if err != nil {
//					return nil, "", err
//				}
//				return d, g.KVMI.Socket, nil // the id is Guest.DomainID
//			},
//		})
//	}
//
// with its section (KVMI KVMIConfig `koanf:"kvmi"`) in collector.GuestConfig.
// Open pauses a driver.Pauser's guest itself. A driver offering a new way
// to hook also gets its entry in engines, by the capability that offers
// it.
package attach
