// Package pgarchive reads the layout of pg_dump's custom-format archives
// (-Fc): the table of contents and where each entry's data lies.
//
// pg_dump writing to a pipe, as every backup does, cannot go back to put
// the data offsets into the table of contents, and pg_restore -j then has
// every worker scan the archive from the start for its table - no faster
// than one job. Read follows an archive as it is copied to a file and
// Patch writes the offsets in afterwards: the file becomes the one pg_dump
// would have written to a seekable file, byte for byte. Rechunk copies an
// archive with each table's rows in large chunks, which compress better.
//
// The layout is pg_dump's own (src/bin/pg_dump/pg_backup_archiver.c and
// pg_backup_custom.c: WriteHead, WriteToc, _StartData, _StartLOs), archive
// versions 1.12 to 1.16 (pg_dump 9.0 to 18). Another version is refused
// with ErrUnsupported: the archive may be good, only not readable here.
package pgarchive

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// Magic is how every custom-format archive begins.
const Magic = "PGDMP"

// Sections of the archive, as pg_dump numbers them.
const (
	SectionNone     = 1
	SectionPreData  = 2
	SectionData     = 3
	SectionPostData = 4
)

// Offset flags of the custom format's per-entry data pointer.
const (
	offsetNotSet = 1
	offsetSet    = 2
	offsetNoData = 3
)

// Data block types.
const (
	blockData = 1
	blockLOs  = 3 // large objects; 2 was a single one, long obsolete
)

const (
	minVersion = 1<<16 | 12<<8 // 1.12 (pg_dump 9.0): every field read below without a version test is there
	maxVersion = 1<<16 | 16<<8 | 255
)

// ErrUnsupported means an archive of a version this package does not know.
var ErrUnsupported = errors.New("pg_dump archive version not supported for indexing")

// ErrMalformed means bytes that are not a custom-format archive.
var ErrMalformed = errors.New("not a well-formed pg_dump custom-format archive")

// Entry is one item of the table of contents.
type Entry struct {
	DumpID  int
	Desc    string // "TABLE DATA", "INDEX", ...
	Tag     string // the object's name
	Section int
	Deps    []int // dump IDs this entry depends on
	// HasData: the entry has a data block (table data, large objects).
	HasData bool
	// DataOffset is where its data block starts in the archive, -1 when
	// it has none or it was not found; DataSize is the block's length.
	DataOffset int64
	DataSize   int64

	pointer int64 // where the entry's offset flag byte is
}

// Index is the layout of one archive.
type Index struct {
	Version [3]int
	Entries []Entry
	Size    int64 // the archive's length
	intSize int
	offSize int
	byID    map[int]int
}

// DataBytes is the total length of the data blocks: what pg_restore loads.
func (ix *Index) DataBytes() int64 {
	var n int64
	for _, e := range ix.Entries {
		n += e.DataSize
	}
	return n
}

// Entry returns the entry with a dump ID.
func (ix *Index) Entry(id int) (*Entry, bool) {
	i, ok := ix.byID[id]
	if !ok {
		return nil, false
	}
	return &ix.Entries[i], true
}

// reader counts what the parser consumed, which read-ahead does not change,
// and copies it to out when set.
type reader struct {
	br  *bufio.Reader
	pos int64
	ix  *Index
	out *bufio.Writer
	// merged: the chunks of a table's data, collected up to its capacity
	// (Rechunk); nil when reading only.
	merged []byte
}

func (r *reader) fail(format string, a ...any) error {
	return fmt.Errorf("%w: at byte %d: %s", ErrMalformed, r.pos, fmt.Sprintf(format, a...))
}

func (r *reader) byte() (byte, error) {
	b, err := r.br.ReadByte()
	if err != nil {
		return 0, r.eof(err)
	}
	r.pos++
	if r.out != nil {
		r.out.WriteByte(b)
	}
	return b, nil
}

func (r *reader) eof(err error) error {
	if errors.Is(err, io.EOF) {
		return r.fail("the archive ends early")
	}
	return err
}

func (r *reader) full(p []byte) error {
	n, err := io.ReadFull(r.br, p)
	r.pos += int64(n)
	if err != nil {
		return r.eof(err)
	}
	if r.out != nil {
		r.out.Write(p)
	}
	return nil
}

func (r *reader) skip(n int64) error {
	if r.out != nil {
		c, err := io.CopyN(r.out, r.br, n)
		r.pos += c
		if err != nil {
			return r.eof(err)
		}
		return nil
	}
	for n > 0 {
		c := int(min(n, 1<<30))
		d, err := r.br.Discard(c)
		r.pos += int64(d)
		n -= int64(d)
		if err != nil {
			return r.eof(err)
		}
	}
	return nil
}

// int reads WriteInt's form: a sign byte, then the magnitude in intSize
// bytes, least significant first.
func (r *reader) int() (int64, error) {
	var b [1 + 8]byte
	p := b[:1+r.ix.intSize]
	if err := r.full(p); err != nil {
		return 0, err
	}
	var v uint64
	for i := r.ix.intSize; i >= 1; i-- {
		v = v<<8 | uint64(p[i])
	}
	if v > 1<<62 {
		return 0, r.fail("integer out of range")
	}
	if p[0] != 0 {
		return -int64(v), nil
	}
	return int64(v), nil
}

const maxEntries = 1 << 20

// maxKept bounds a string kept in memory (a tag, a type, a dependency):
// strings skipped (definitions) may be long.
const maxKept = 1 << 20

// str reads WriteStr's form; ok is false for NULL. Only a kept string is
// read into memory.
func (r *reader) str(keep bool) (s string, ok bool, err error) {
	n, err := r.int()
	if err != nil || n < 0 {
		return "", false, err
	}
	if !keep {
		return "", true, r.skip(n)
	}
	if n > maxKept {
		return "", false, r.fail("a %d-byte name", n)
	}
	b := make([]byte, n)
	if err := r.full(b); err != nil {
		return "", false, err
	}
	return string(b), true, nil
}

func (r *reader) skipStr(n int) error {
	for range n {
		if _, _, err := r.str(false); err != nil {
			return err
		}
	}
	return nil
}

// Read follows an archive to its end: read it through an io.TeeReader to
// copy it as it is indexed. It reads exactly the archive, to io.EOF.
func Read(rd io.Reader) (*Index, error) {
	ix := &Index{byID: map[int]int{}}
	r := &reader{br: bufio.NewReaderSize(rd, 256<<10), ix: ix}
	if err := r.header(); err != nil {
		return nil, err
	}
	if err := r.toc(); err != nil {
		return nil, err
	}
	if err := r.data(); err != nil {
		return nil, err
	}
	ix.Size = r.pos
	return ix, nil
}

func (r *reader) header() error {
	var h [11]byte
	if err := r.full(h[:]); err != nil {
		return err
	}
	if string(h[:5]) != Magic {
		return r.fail("no PGDMP magic")
	}
	ix := r.ix
	ix.Version = [3]int{int(h[5]), int(h[6]), int(h[7])}
	v := int(h[5])<<16 | int(h[6])<<8 | int(h[7])
	if v < minVersion || v > maxVersion {
		return fmt.Errorf("%w: archive version %d.%d", ErrUnsupported, h[5], h[6])
	}
	ix.intSize, ix.offSize = int(h[8]), int(h[9])
	if ix.intSize < 1 || ix.intSize > 8 || ix.offSize < 1 || ix.offSize > 8 {
		return r.fail("integer size %d, offset size %d", ix.intSize, ix.offSize)
	}
	if h[10] != 1 {
		return r.fail("format %d is not the custom format", h[10])
	}
	if v >= 1<<16|15<<8 {
		_, err := r.byte() // compression algorithm
		if err != nil {
			return err
		}
	} else if _, err := r.int(); err != nil { // compression level
		return err
	}
	for range 7 { // creation time
		if _, err := r.int(); err != nil {
			return err
		}
	}
	return r.skipStr(3) // database, server version, pg_dump version
}

func (r *reader) version(minor int) bool {
	v := r.ix.Version
	return v[0] > 1 || v[0] == 1 && v[1] >= minor
}

func (r *reader) toc() error {
	n, err := r.int()
	if err != nil {
		return err
	}
	// A Mastodon database has a few thousand entries; the bound keeps a
	// damaged count from taking the memory.
	if n < 0 || n > maxEntries {
		return r.fail("%d table of contents entries (at most %d are read)", n, maxEntries)
	}
	ix := r.ix
	ix.Entries = make([]Entry, 0, min(n, 1<<16))
	for range n {
		var e Entry
		id, err := r.int()
		if err != nil {
			return err
		}
		hadDumper, err := r.int()
		if err != nil {
			return err
		}
		e.DumpID, e.HasData, e.DataOffset = int(id), hadDumper != 0, -1
		if err := r.skipStr(2); err != nil { // table oid, oid
			return err
		}
		if e.Tag, _, err = r.str(true); err != nil {
			return err
		}
		if e.Desc, _, err = r.str(true); err != nil {
			return err
		}
		sec, err := r.int()
		if err != nil {
			return err
		}
		e.Section = int(sec)
		// definition, drop statement, COPY statement, namespace,
		// tablespace; the table access method from 1.14.
		fields := 5
		if r.version(14) {
			fields++
		}
		if err := r.skipStr(fields); err != nil {
			return err
		}
		if r.version(16) { // relkind
			if _, err := r.int(); err != nil {
				return err
			}
		}
		if err := r.skipStr(2); err != nil { // owner, "false" (with OIDs)
			return err
		}
		for {
			d, ok, err := r.str(true)
			if err != nil {
				return err
			}
			if !ok {
				break
			}
			dep, err := strconv.Atoi(d)
			if err != nil {
				return r.fail("dependency %q", d)
			}
			e.Deps = append(e.Deps, dep)
		}
		e.pointer = r.pos
		flag, err := r.byte()
		if err != nil {
			return err
		}
		if flag < offsetNotSet || flag > offsetNoData {
			return r.fail("data offset flag %d", flag)
		}
		if err := r.skip(int64(ix.offSize)); err != nil {
			return err
		}
		if _, dup := ix.byID[e.DumpID]; dup {
			return r.fail("dump ID %d twice", e.DumpID)
		}
		ix.byID[e.DumpID] = len(ix.Entries)
		ix.Entries = append(ix.Entries, e)
	}
	return nil
}

// data walks the data blocks to the end of the archive.
func (r *reader) data() error {
	for {
		start := r.pos
		t, err := r.br.ReadByte()
		if errors.Is(err, io.EOF) {
			return nil // pg_dump writes nothing after the last block
		}
		if err != nil {
			return err
		}
		r.pos++
		if r.out != nil {
			r.out.WriteByte(t)
		}
		id, err := r.int()
		if err != nil {
			return err
		}
		e, ok := r.ix.Entry(int(id))
		if !ok || !e.HasData || e.DataOffset >= 0 {
			return r.fail("a data block for dump ID %d, which has no data or has one already", id)
		}
		switch {
		case t == blockData && r.merged != nil:
			err = r.mergeChunks()
		case t == blockData:
			err = r.chunks()
		case t == blockLOs:
			err = r.largeObjects()
		default:
			return r.fail("data block type %d", t)
		}
		if err != nil {
			return err
		}
		e.DataOffset, e.DataSize = start, r.pos-start
	}
}

// mergeChunks copies a table's data with its chunks merged into chunks of
// up to cap(r.merged) bytes.
func (r *reader) mergeChunks() error {
	out := r.out
	r.out = nil // the chunks' lengths are written anew
	defer func() { r.out = out }()
	flush := func() error {
		if len(r.merged) == 0 {
			return nil
		}
		writeInt(out, r.ix.intSize, int64(len(r.merged)))
		_, err := out.Write(r.merged) // the writer's first failure, if any
		r.merged = r.merged[:0]
		return err
	}
	for {
		n, err := r.int()
		if err != nil {
			return err
		}
		if n == 0 {
			if err := flush(); err != nil {
				return err
			}
			writeInt(out, r.ix.intSize, 0)
			return nil
		}
		if n < 0 {
			return r.fail("a chunk of length %d", n)
		}
		for n > 0 {
			if len(r.merged) == cap(r.merged) {
				if err := flush(); err != nil {
					return err
				}
			}
			c := int(min(n, int64(cap(r.merged)-len(r.merged))))
			at := len(r.merged)
			r.merged = r.merged[:at+c]
			if err := r.full(r.merged[at:]); err != nil {
				return err
			}
			n -= int64(c)
		}
	}
}

// writeInt writes WriteInt's form.
func writeInt(w *bufio.Writer, size int, v int64) {
	if v < 0 {
		w.WriteByte(1)
		v = -v
	} else {
		w.WriteByte(0)
	}
	for range size {
		w.WriteByte(byte(v))
		v >>= 8
	}
}

// largeObjects skips each large object's OID and chunks up to the zero
// OID that ends them.
func (r *reader) largeObjects() error {
	for {
		oid, err := r.int()
		if err != nil || oid == 0 {
			return err
		}
		if err := r.chunks(); err != nil {
			return err
		}
	}
}

// chunks skips length-prefixed chunks up to the zero length that ends them.
func (r *reader) chunks() error {
	for {
		n, err := r.int()
		if err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		if n < 0 {
			return r.fail("a chunk of length %d", n)
		}
		if err := r.skip(n); err != nil {
			return err
		}
	}
}

// Rechunk copies the archive in src to dst with the data of each table
// in chunks of up to chunk bytes. pg_dump writes a chunk for every row,
// each behind a 5-byte length: those lengths, scattered through the rows,
// cost zstd about 2% in size on a Mastodon database, which pg_dump's own
// compression does not pay. pg_restore reads chunks of any length - its
// own decompression hands it data split anywhere - so the archive restores
// the same rows. Large objects are copied as they are.
//
// An archive of a version this package does not know (ErrUnsupported) is
// copied unchanged. It returns what it wrote.
func Rechunk(dst io.Writer, src io.Reader, chunk int) (int64, error) {
	cw := &countWriter{w: dst}
	out := bufio.NewWriterSize(cw, 256<<10)
	ix := &Index{byID: map[int]int{}}
	r := &reader{br: bufio.NewReaderSize(src, 256<<10), ix: ix, out: out, merged: make([]byte, 0, chunk)}
	err := r.header()
	if errors.Is(err, ErrUnsupported) {
		r.out = nil
		if _, err := io.Copy(out, r.br); err != nil {
			return cw.n, err
		}
		if err := out.Flush(); err != nil {
			return cw.n, err
		}
		return cw.n, nil
	}
	if err == nil {
		err = r.toc()
	}
	if err == nil {
		err = r.data()
	}
	if ferr := out.Flush(); err == nil {
		err = ferr
	}
	return cw.n, err
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// Patch writes each data block's offset into the table of contents of the
// archive in w, the file that holds the bytes Read followed. Entries
// whose block was not found keep "not set": pg_restore looks for them.
func (ix *Index) Patch(w io.WriterAt) error {
	buf := make([]byte, 1+ix.offSize)
	for _, e := range ix.Entries {
		if e.DataOffset < 0 {
			continue
		}
		buf[0] = offsetSet
		var le [8]byte
		binary.LittleEndian.PutUint64(le[:], uint64(e.DataOffset))
		copy(buf[1:], le[:ix.offSize])
		if ix.offSize < 8 && uint64(e.DataOffset)>>(8*ix.offSize) != 0 {
			return fmt.Errorf("pgarchive: offset %d does not fit in %d bytes", e.DataOffset, ix.offSize)
		}
		if _, err := w.WriteAt(buf, e.pointer); err != nil {
			return fmt.Errorf("pgarchive: write the offset of dump ID %d: %w", e.DumpID, err)
		}
	}
	return nil
}
