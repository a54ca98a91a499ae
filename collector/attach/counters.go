package attach

// Counters implements collector.CounterSource: the driver's repeated
// single steps over a breakpoint (a vCPU that did not move), exported as
// vmi_session_events_total{counter="qemu_resteps"}.
func (s *qemuSession) Counters() map[string]uint64 {
	return map[string]uint64{"qemu_resteps": s.d.Resteps()}
}
