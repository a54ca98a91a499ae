package attach

// Counters implements collector.CounterSource with what the driver counts
// of its own, exported as vmi_session_events_total{counter=...}: the QEMU
// gdbstub driver's repeated single steps over a breakpoint (a vCPU that
// did not move), and the plugin driver's hits overwritten in a mailbox
// before they were read.
func (s *session) Counters() map[string]uint64 {
	out := map[string]uint64{}
	if r, ok := s.d.(interface{ Resteps() uint64 }); ok {
		out["qemu_resteps"] = r.Resteps()
	}
	if t, ok := s.d.(interface{ Torn() uint64 }); ok {
		out["plugin_torn_hits"] = t.Torn()
	}
	return out
}
