// Package bytesize reads and writes the sizes people give in variables
// (POSTGRES_SHARED_BUFFERS, BACKUP_S3_PART_SIZE, DISK_FREE_MIN, ...): one
// syntax for all of them.
//
// PostgreSQL's memory units (kB, MB, GB, TB) and the IEC units (KiB, MiB,
// GiB, TiB, or just K, M, G, T) are all accepted and all mean multiples of
// 1024 - PostgreSQL's MB is 1024 kB - so "256MB" and "256MiB" are the same
// size wherever they are given. Units are case-insensitive.
package bytesize

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

var units = map[string]float64{
	"": 1, "b": 1,
	"k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10,
	"m": 1 << 20, "mb": 1 << 20, "mib": 1 << 20,
	"g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30,
	"t": 1 << 40, "tb": 1 << 40, "tib": 1 << 40,
}

// Syntax describes what Parse accepts, for error messages.
const Syntax = "a number followed by kB, MB, GB (as PostgreSQL means them: multiples of 1024) or KiB, MiB, GiB"

// Parse reads a size: a number of bytes ("16777216") or a number, possibly
// with a fraction, followed by a unit ("256MB", "16MiB", "1.5GiB").
// Fractions of a byte are dropped.
func Parse(s string) (int64, error) {
	v := strings.TrimSpace(s)
	i := strings.IndexFunc(v, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	num, unit := v, ""
	if i >= 0 {
		num, unit = v[:i], strings.ToLower(strings.TrimSpace(v[i:]))
	}
	mult, known := units[unit]
	n, err := strconv.ParseFloat(num, 64)
	switch {
	case v == "":
		return 0, fmt.Errorf("is empty; it must be %s", Syntax)
	case num == "" || err != nil || math.IsNaN(n):
		return 0, fmt.Errorf("is %q, which is not a size; it must be %s", s, Syntax)
	case !known:
		return 0, fmt.Errorf("is %q, whose unit %q is unknown; it must be %s", s, v[i:], Syntax)
	case n*mult >= 1<<62:
		return 0, fmt.Errorf("is %q, which is too large", s)
	}
	return int64(n * mult), nil
}

var binary = []struct {
	iec, pg string
	v       int64
}{{"TiB", "TB", 1 << 40}, {"GiB", "GB", 1 << 30}, {"MiB", "MB", 1 << 20}, {"KiB", "kB", 1 << 10}}

// Format writes n bytes with the largest IEC unit that divides it ("16MiB");
// Parse reads it back to n.
func Format(n int64) string {
	for _, u := range binary {
		if n >= u.v && n%u.v == 0 {
			return strconv.FormatInt(n/u.v, 10) + u.iec
		}
	}
	return strconv.FormatInt(n, 10)
}

// Postgres writes n bytes as a PostgreSQL memory setting ("256MB"): the
// largest unit that divides it, rounded up to whole kB, PostgreSQL's
// smallest memory unit.
func Postgres(n int64) string {
	kb := (n + 1023) / 1024
	for _, u := range binary {
		if d := u.v / 1024; kb >= d && kb%d == 0 {
			return strconv.FormatInt(kb/d, 10) + u.pg
		}
	}
	return "0kB"
}
