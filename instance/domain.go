package instance

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/mastodon-on-balena/mastodon-balena/problem"
)

// PublicURLSuffix is the domain of balena's public device URLs.
const PublicURLSuffix = ".balena-devices.com"

// DomainSource says where the instance's domain came from.
type DomainSource int

const (
	FromVariable  DomainSource = iota // LOCAL_DOMAIN
	FromPublicURL                     // the balena public device URL
)

// ResolveDomain picks the instance's domain: LOCAL_DOMAIN when set, else the
// host of this device's balena public URL.
func ResolveDomain(getenv func(string) string) (string, DomainSource, error) {
	if d := getenv("LOCAL_DOMAIN"); d != "" {
		if msg := CheckDomain(d); msg != "" {
			return "", 0, fmt.Errorf("LOCAL_DOMAIN %q %s (example: LOCAL_DOMAIN=social.example.org)", d, msg)
		}
		return d, FromVariable, nil
	}
	if uuid := getenv("BALENA_DEVICE_UUID"); uuid != "" {
		d := strings.ToLower(uuid) + PublicURLSuffix
		if msg := CheckDomain(d); msg != "" {
			return "", 0, fmt.Errorf("BALENA_DEVICE_UUID %q does not make a host name: %s", uuid, msg)
		}
		return d, FromPublicURL, nil
	}
	return "", 0, fmt.Errorf("LOCAL_DOMAIN is not set and this is not a balena device (no BALENA_DEVICE_UUID): set LOCAL_DOMAIN to the domain people will address this instance by (example: LOCAL_DOMAIN=social.example.org); it can never change afterwards")
}

// IsPublicURLHost says whether domain is a balena public device URL host,
// which belongs to one device and so can never move to other hardware.
func IsPublicURLHost(domain string) bool { return strings.HasSuffix(domain, PublicURLSuffix) }

var label = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// CheckDomain says what is wrong with a domain, or "".
func CheckDomain(d string) string {
	switch {
	case strings.Contains(d, "://") || strings.Contains(d, "/"):
		return "must be a bare host name, without scheme or path"
	case strings.ToLower(d) != d:
		return "must be lower case"
	case len(d) > 253:
		return "is longer than 253 characters"
	case !strings.Contains(d, "."):
		return "must be a fully qualified domain name (it has no dot)"
	}
	labels := strings.Split(d, ".")
	for _, l := range labels {
		if !label.MatchString(l) {
			return fmt.Sprintf("has an invalid label %q (letters, digits and inner hyphens only)", l)
		}
	}
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		return "must be a domain name, not an IP address (no top-level domain is all digits)"
	}
	return ""
}

// GuardError is what Guard refuses (as a problem.Refused): an environment
// that contradicts the recorded instance. Nothing has been changed when it is returned.
type GuardError struct{ Problems []string }

func (e *GuardError) Error() string {
	return "this instance's recorded identity differs from the configuration; nothing was changed:\n  - " +
		strings.Join(e.Problems, "\n  - ")
}

// Guard compares the environment with the recorded instance: a different
// LOCAL_DOMAIN or a provided secret that differs from the recorded one is
// refused. Values of secrets are never named, only their variables.
func Guard(rec *Record, getenv func(string) string) error {
	var problems []string
	if d := getenv("LOCAL_DOMAIN"); d != "" && d != rec.LocalDomain {
		problems = append(problems, fmt.Sprintf(
			"LOCAL_DOMAIN is %q but this instance was provisioned as %q and an instance's domain can never change. "+
				"Set LOCAL_DOMAIN back to %q (or remove it); to start a new instance under %q instead, purge the device's data first",
			d, rec.LocalDomain, rec.LocalDomain, d))
	}
	for _, name := range SecretNames {
		if v := getenv(name); v != "" && v != rec.Secrets[name] {
			problems = append(problems, fmt.Sprintf(
				"%s is set and differs from the value this instance was provisioned with (kept in %s). "+
					"Remove the variable: the recorded value is used automatically", name, "the keeper volume"))
		}
	}
	if len(problems) > 0 {
		return problem.Refuse(&GuardError{Problems: problems})
	}
	return nil
}

// NewRecord builds the record for a first provisioning: secrets given in
// the environment are adopted (an existing instance moving in), the rest
// taken from generated. Provided values must have passed config.Load.
func NewRecord(domain string, getenv func(string) string, generated Secrets) *Record {
	rec := &Record{LocalDomain: domain, InstanceID: NewInstanceID(), Secrets: Secrets{}}
	for _, name := range SecretNames {
		if v := getenv(name); v != "" {
			rec.Secrets[name] = v
			rec.Adopted = append(rec.Adopted, name)
		} else {
			rec.Secrets[name] = generated[name]
		}
	}
	return rec
}
