package problem_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/mastodon-on-balena/mastodon-balena/problem"
)

func TestAProblemNamesTheVariableWhatIsWrongAndAGoodValue(t *testing.T) {
	p := problem.Problem{Var: "DB_PORT", What: `is "x"; it must be a TCP port number from 1 to 65535`, Example: "5432"}
	if got, want := p.String(), `DB_PORT: is "x"; it must be a TCP port number from 1 to 65535 (example: DB_PORT=5432)`; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	if got := (problem.Problem{Var: "REDIS_NAMESPACE", What: "is set; remove it"}).String(); got != "REDIS_NAMESPACE: is set; remove it" {
		t.Fatalf("without an example: %q", got)
	}
}

func TestAListIsOneLineForOneProblemAndABulletedListForMore(t *testing.T) {
	one := problem.List{{Var: "A", What: "is bad"}}
	if one.Error() != "A: is bad" {
		t.Fatalf("one: %q", one.Error())
	}
	two := problem.List{{Var: "A", What: "is bad"}, {Var: "B", What: "is worse", Example: "1"}}
	if want := "2 configuration problems:\n  - A: is bad\n  - B: is worse (example: B=1)"; two.Error() != want {
		t.Fatalf("two: %q", two.Error())
	}
	if (problem.List{}).Err() != nil {
		t.Fatal("an empty list is no error")
	}
}

func TestRefusalsAreRecognisedThroughWrapping(t *testing.T) {
	for _, err := range []error{
		problem.Refusef("the target holds another instance's backups"),
		fmt.Errorf("backup: %w", problem.Refuse(errors.New("no passphrase"))),
		fmt.Errorf("config: %w", problem.List{{Var: "A", What: "is bad"}}),
	} {
		if !problem.IsRefused(err) {
			t.Errorf("%v: not recognised as a refusal", err)
		}
	}
	if problem.IsRefused(errors.New("connection refused")) || problem.IsRefused(nil) {
		t.Error("an ordinary failure is not a refusal")
	}
	if problem.Refuse(nil) != nil {
		t.Error("Refuse(nil) must stay nil")
	}
}
