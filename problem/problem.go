// Package problem holds the two ways the keeper says that what it was
// given is wrong, rather than what it did: a bad variable (Problem, listed
// all at once in a List) and a refusal (Refused). cmd/mastokeeper maps
// both to one exit code, so each has one type and one format.
package problem

import (
	"errors"
	"fmt"
	"strings"
)

// Problem is one bad variable (or argument): its name, what is wrong -
// never containing a secret - and a good value.
type Problem struct{ Var, What, Example string }

// String is "VAR: what is wrong (example: VAR=good)".
func (p Problem) String() string {
	s := p.Var + ": " + p.What
	if p.Example != "" {
		s += " (example: " + p.Var + "=" + p.Example + ")"
	}
	return s
}

// List is every problem found, so a person fixes them in one go. As an
// error it is a refusal: nothing was done.
type List []Problem

func (l List) Error() string {
	if len(l) == 1 {
		return l[0].String()
	}
	lines := make([]string, len(l))
	for i, p := range l {
		lines[i] = "  - " + p.String()
	}
	return fmt.Sprintf("%d configuration problems:\n%s", len(l), strings.Join(lines, "\n"))
}

// Err is l as an error, or nil when there is no problem.
func (l List) Err() error {
	if len(l) == 0 {
		return nil
	}
	return l
}

// Refused means the keeper will not do what was asked until something is
// fixed (a variable, the recorded instance, the target's owner); nothing
// was changed. Its message says what to fix.
type Refused struct{ Err error }

func (e *Refused) Error() string { return e.Err.Error() }
func (e *Refused) Unwrap() error { return e.Err }

// Refuse wraps err as a refusal; nil stays nil.
func Refuse(err error) error {
	if err == nil {
		return nil
	}
	return &Refused{Err: err}
}

// Refusef is Refuse(fmt.Errorf(format, args...)).
func Refusef(format string, args ...any) error { return &Refused{Err: fmt.Errorf(format, args...)} }

// IsRefused reports whether err, anywhere in its chain, is a refusal or a
// list of bad variables.
func IsRefused(err error) bool {
	var r *Refused
	var l List
	return errors.As(err, &r) || errors.As(err, &l)
}
