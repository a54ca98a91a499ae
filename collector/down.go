package collector

import (
	"context"
	"errors"
	"os"
	"syscall"
)

// Down reasons: why a guest is not attached, the bounded reason label of
// vmi_guest_down_reason. Attach failures are classified by their error;
// a session that ended is session_ended whatever ended it (the log line
// has the error).
const (
	DownNotFound     = "not_found"     // a socket or file of the guest is missing on this host
	DownRefused      = "refused"       // a socket exists but nothing listens (the VM is stopped)
	DownPermission   = "permission"    // the exporter may not open a socket or file of the guest
	DownTimeout      = "timeout"       // the hypervisor did not answer in time
	DownAttachError  = "attach_error"  // any other attach failure
	DownSessionEnded = "session_ended" // the guest was attached and its session ended
)

// DownReasons lists every down reason, for metrics that start each at 0.
func DownReasons() []string {
	return []string{DownNotFound, DownRefused, DownPermission, DownTimeout, DownAttachError, DownSessionEnded}
}

// AttachFailureReason classifies an attach error into one of the down
// reasons.
func AttachFailureReason(err error) string {
	switch {
	case errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ENOENT):
		return DownNotFound
	case errors.Is(err, syscall.ECONNREFUSED):
		return DownRefused
	case errors.Is(err, os.ErrPermission):
		return DownPermission
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded):
		return DownTimeout
	}
	return DownAttachError
}

// DownMetrics is implemented by Metrics that say why a guest is down.
// The collector calls Down with a reason (one of DownReasons) each time a
// guest goes or stays down, and with "" once it is attached.
type DownMetrics interface {
	Down(domain, reason string)
}
