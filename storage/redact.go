package storage

import (
	"net/url"
	"regexp"
	"sort"
	"strings"
)

// Redacted replaces a credential in text.
const Redacted = "[redacted]"

// minSecretLen is the shortest secret Redact replaces by value: replacing
// every "ab" in a message would garble it without hiding anything useful.
const minSecretLen = 4

var (
	// scheme://user:password@ or scheme://user@ (the user name may be an
	// access key).
	userinfoRE = regexp.MustCompile(`([A-Za-z][A-Za-z0-9+.\-]*://)[^/@\s"'<>]+@`)
	// Query parameters that carry credentials in signed or token URLs.
	sensitiveQueryRE = regexp.MustCompile(`(?i)([?&;](?:x-amz-signature|x-amz-credential|x-amz-security-token|signature|awsaccesskeyid|temp_url_sig|sig|token|access_token|password|passwd|secret|key|api_key|apikey)=)[^&\s"'<>]*`)
	// Headers that carry credentials, as they may appear in dumped requests.
	sensitiveHeaderRE = regexp.MustCompile(`(?i)((?:x-auth-token|x-storage-token|x-auth-key|x-storage-pass|authorization|x-amz-security-token)\s*[:=]\s*)[^\s,;"']+`)
)

// Redact returns s with every given secret replaced by [redacted] (secrets
// shorter than 4 bytes are left alone), and with the user info of URLs and
// credential-carrying query parameters and headers replaced too. Use it on
// any text that may reach a log or an error: URLs, error messages.
func Redact(s string, secrets ...string) string {
	if s == "" {
		return s
	}
	// Longest first, so a secret containing another is replaced whole.
	sorted := make([]string, 0, len(secrets))
	for _, sec := range secrets {
		if len(sec) >= minSecretLen {
			sorted = append(sorted, sec)
		}
	}
	sort.Slice(sorted, func(i, j int) bool { return len(sorted[i]) > len(sorted[j]) })
	for _, sec := range sorted {
		s = strings.ReplaceAll(s, sec, Redacted)
		// The same secret as it appears inside a URL.
		if esc := url.QueryEscape(sec); esc != sec {
			s = strings.ReplaceAll(s, esc, Redacted)
		}
		if esc := url.PathEscape(sec); esc != sec {
			s = strings.ReplaceAll(s, esc, Redacted)
		}
	}
	s = userinfoRE.ReplaceAllString(s, "${1}"+Redacted+"@")
	s = sensitiveQueryRE.ReplaceAllString(s, "${1}"+Redacted)
	s = sensitiveHeaderRE.ReplaceAllString(s, "${1}"+Redacted)
	return s
}

// RedactURL returns raw with its user info and credential-carrying query
// parameters replaced; raw need not parse.
func RedactURL(raw string) string {
	return Redact(raw)
}

// RedactError returns an error whose text is Redact(err.Error(), secrets...)
// and which still unwraps to err (errors.Is works through it). nil stays nil.
func RedactError(err error, secrets ...string) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	red := Redact(msg, secrets...)
	if red == msg {
		return err
	}
	return &redactedError{msg: red, err: err}
}

type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }
