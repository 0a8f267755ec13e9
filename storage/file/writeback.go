package file

import (
	"os"

	"golang.org/x/sys/unix"
)

// writebackEvery is how much is written before the kernel is asked to
// start writing it to disk.
const writebackEvery = 8 << 20

// writeback writes to f and starts the disk writes behind it as it goes
// (sync_file_range, SYNC_FILE_RANGE_WRITE: no waiting), so that the Sync
// at the end of a long upload waits for the last few MiB only, not for
// the whole object (313 MiB written over 3 s on this machine's disk: the
// Sync took 0.16-0.34 s instead of 0.45-0.47), and a Pi's little memory
// does not fill with dirty pages. Durability is still the final Sync's:
// this only starts it early.
type writeback struct {
	f          *os.File
	off, start int64
}

func (w *writeback) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	w.off += int64(n)
	if w.off-w.start >= writebackEvery {
		// Best effort: a file system without it loses only the head start.
		_ = unix.SyncFileRange(int(w.f.Fd()), w.start, w.off-w.start, unix.SYNC_FILE_RANGE_WRITE)
		w.start = w.off
	}
	return n, err
}
