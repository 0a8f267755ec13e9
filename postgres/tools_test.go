package postgres

import (
	"context"
	"testing"
)

func TestToolMajorReadsTheMajorOfEveryReleaseSpelling(t *testing.T) {
	for out, want := range map[string]int{
		"pg_dump (PostgreSQL) 17.12 (Debian 17.12-0+deb13u1)\n": 17,
		"pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n": 15,
		"pg_restore (PostgreSQL) 18beta1\n":                     18,
		"pg_dump (PostgreSQL) 9.6.24\n":                         9,
	} {
		if got, err := parseToolMajor("pg_dump", []byte(out)); err != nil || got != want {
			t.Errorf("%q: %d, %v; want %d", out, got, err, want)
		}
	}
	if _, err := parseToolMajor("pg_dump", []byte("dump 1.0\n")); err == nil {
		t.Error("a version without (PostgreSQL) was read")
	}
}

func TestToolMajorRunsTheToolOnThePath(t *testing.T) {
	major, err := ToolMajor(context.Background(), "pg_dump")
	if err != nil || major < 9 {
		t.Fatalf("pg_dump on the PATH: major %d, %v (the tests need PostgreSQL's client tools)", major, err)
	}
	if _, err := ToolMajor(context.Background(), "pg_no_such_tool"); err == nil {
		t.Error("a missing tool has a version")
	}
}
