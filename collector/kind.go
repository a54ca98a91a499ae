package collector

import "fmt"

// ProbeKinds are the kinds that come from probes (the others come from
// engine notices); these are the names the configuration accepts.
func ProbeKinds() []Kind {
	return []Kind{KindFileCreate, KindFileWrite, KindProcessStart, KindProcessExit}
}

// ParseKind returns the kind named s (as Kind.String prints it).
func ParseKind(s string) (Kind, error) {
	for _, k := range Kinds() {
		if k.String() == s {
			return k, nil
		}
	}
	return 0, fmt.Errorf("unknown event kind %q", s)
}
