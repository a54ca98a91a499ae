// Package redact hides credentials in strings that are logged.
package redact

import (
	"net/url"
	"strings"
)

// secretQueryKeys are query parameters whose values URL hides.
var secretQueryKeys = []string{"token", "key", "secret", "password", "passwd", "auth", "signature", "sig"}

// URL returns s with the credentials an endpoint URL can carry
// (user:password@, and query values such as ?api_key=) replaced by
// "REDACTED", for logs and error messages. Other strings (host:port) are
// returned as they are; a URL that does not parse loses everything after
// its scheme, since where its userinfo ends cannot be told.
func URL(s string) string {
	if !strings.Contains(s, "://") {
		return s
	}
	u, err := url.Parse(s)
	if err != nil {
		scheme, _, _ := strings.Cut(s, "://")
		return scheme + "://REDACTED"
	}
	if u.User != nil {
		u.User = url.User("REDACTED")
	}
	if u.RawQuery != "" {
		q := u.Query()
		for k := range q {
			lk := strings.ToLower(k)
			for _, sk := range secretQueryKeys {
				if strings.Contains(lk, sk) {
					q.Set(k, "REDACTED")
					break
				}
			}
		}
		u.RawQuery = q.Encode()
	}
	return u.String()
}

// Error returns err's message with every occurrence of the URL raw
// replaced by its redacted form: exporters' errors quote the endpoint.
func Error(err error, raw string) string {
	if err == nil {
		return ""
	}
	msg := err.Error()
	if r := URL(raw); r != raw && raw != "" {
		msg = strings.ReplaceAll(msg, raw, r)
		// The URL as net/url prints it (userinfo escaped) too.
		if u, perr := url.Parse(raw); perr == nil {
			msg = strings.ReplaceAll(msg, u.String(), r)
			if u.User != nil {
				msg = strings.ReplaceAll(msg, u.User.String()+"@", "REDACTED@")
			}
		}
	}
	return msg
}
