package collector

// CounterSource is implemented by a Session or its GuestOS that counts
// things worth exporting besides events (a Windows probe's parent
// mismatches, a driver's repeated single steps). Counters returns the
// current values by name (snake_case); they start at 0 with the session.
type CounterSource interface {
	Counters() map[string]uint64
}

// CounterMetrics is implemented by Metrics that export sessions'
// counters. The collector calls SessionCounters with the session's read
// function when it is attached and with nil when it ends.
type CounterMetrics interface {
	SessionCounters(domain string, read func() map[string]uint64)
}

// sessionCounters returns a function reading the counters of every
// CounterSource among the session and its OS layer, or nil if none.
func sessionCounters(sess Session) func() map[string]uint64 {
	var srcs []CounterSource
	if c, ok := sess.(CounterSource); ok {
		srcs = append(srcs, c)
	}
	if c, ok := sess.OS().(CounterSource); ok {
		srcs = append(srcs, c)
	}
	if len(srcs) == 0 {
		return nil
	}
	return func() map[string]uint64 {
		out := map[string]uint64{}
		for _, s := range srcs {
			for k, v := range s.Counters() {
				out[k] += v
			}
		}
		return out
	}
}
