package snapshot

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"sync"
)

// DefaultMediaConcurrency is how many media files a backup hashes and
// uploads at once, and a restore downloads: an object store answers each
// request after a round trip, so one file at a time spends most of its
// time waiting. Through the S3 client to versitygw with 20 ms added to
// every request (BenchmarkMediaConcurrencyS3, 500 small files): 11.9 s one
// at a time, 3.2 s four at a time, 1.6 s eight, 0.9 s sixteen. Eight is
// the default; the memory they may hold is bounded apart (smallBudget).
const DefaultMediaConcurrency = 8

// The S3 client holds a small object (up to 4 MiB) in memory while it
// sends it, and a whole part (BACKUP_S3_PART_SIZE) of a larger one: the
// uploads at once hold at most smallBudget of small files, and one large
// file (over largeMedia) at a time.
const (
	largeMedia  = 4 << 20
	smallBudget = 16 << 20
)

// storedBlobs is what the target holds of the media blobs, shared by the
// uploads running at once: a blob is uploaded once, however many files
// share it, even when they are read at the same moment.
type storedBlobs struct {
	mu    sync.Mutex
	size  map[string]int64         // blob key -> stored size
	busy  map[string]chan struct{} // blob key -> closed when its upload ends
	large sync.Mutex               // held by the upload of a large file

	memMu   sync.Mutex
	memFree *sync.Cond
	mem     int64 // bytes of small files being uploaded
}

// hold waits until an upload of n bytes fits in the memory the uploads
// may hold, and returns its release: a large file waits for the others
// of its kind, a small one for room in smallBudget (one always fits).
func (s *storedBlobs) hold(n int64) (release func()) {
	if n > largeMedia {
		s.large.Lock()
		return s.large.Unlock
	}
	s.memMu.Lock()
	defer s.memMu.Unlock()
	if s.memFree == nil {
		s.memFree = sync.NewCond(&s.memMu)
	}
	for s.mem > 0 && s.mem+n > smallBudget {
		s.memFree.Wait()
	}
	s.mem += n
	return func() {
		s.memMu.Lock()
		s.mem -= n
		s.memFree.Broadcast()
		s.memMu.Unlock()
	}
}

// ensure makes sure blob key is stored at size, running upload unless it
// is, or until another upload of it succeeded. uploaded says this call
// stored it.
func (s *storedBlobs) ensure(key string, size int64, upload func() error) (uploaded bool, err error) {
	for {
		s.mu.Lock()
		if s.size[key] == size {
			s.mu.Unlock()
			return false, nil
		}
		if ch, ok := s.busy[key]; ok {
			s.mu.Unlock()
			<-ch // then look again: stored, or up to this call
			continue
		}
		ch := make(chan struct{})
		s.busy[key] = ch
		s.mu.Unlock()

		err := upload()
		s.mu.Lock()
		if err == nil {
			s.size[key] = size
		}
		delete(s.busy, key)
		close(ch)
		s.mu.Unlock()
		return err == nil, err
	}
}

// mediaResult is one media file's outcome.
type mediaResult struct {
	path     string
	e        MediaEntry
	uploaded bool
	err      error // ErrNotExist, errChanged or errReadFile: the file is left out
}

// mediaPool backs up the files the walk hands it, several at once, and
// gives their outcomes back in the walk's order. An error other than a
// file's own (the target failing) cancels the walk.
type mediaPool struct {
	jobs    chan mediaJob
	wg      sync.WaitGroup
	mu      sync.Mutex
	results []mediaResult
	n       int
	err     error
	cancel  context.CancelFunc
}

type mediaJob struct {
	i    int
	path string
}

func newMediaPool(ctx context.Context, cancel context.CancelFunc, b *Backup, root *os.Root, cache hashCache, stored *storedBlobs) *mediaPool {
	workers := b.MediaConcurrency
	if workers <= 0 {
		workers = DefaultMediaConcurrency
	}
	mp := &mediaPool{jobs: make(chan mediaJob, workers), cancel: cancel}
	for range workers {
		mp.wg.Add(1)
		go func() {
			defer mp.wg.Done()
			for j := range mp.jobs {
				e, uploaded, err := b.backupFile(ctx, root, j.path, cache, stored)
				mp.mu.Lock()
				switch {
				case err == nil, errors.Is(err, fs.ErrNotExist), errors.Is(err, errChanged), errors.Is(err, errReadFile):
					mp.results[j.i] = mediaResult{path: j.path, e: e, uploaded: uploaded, err: err}
				case mp.err == nil:
					mp.err = err
					mp.cancel()
				}
				mp.mu.Unlock()
			}
		}()
	}
	return mp
}

// add hands a file to the pool, waiting while every worker is busy.
func (mp *mediaPool) add(ctx context.Context, path string) error {
	mp.mu.Lock()
	i := mp.n
	mp.n++
	mp.results = append(mp.results, mediaResult{path: path, err: fs.ErrNotExist})
	mp.mu.Unlock()
	select {
	case mp.jobs <- mediaJob{i, path}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// wait waits for every file handed in and returns their outcomes in the
// walk's order, or the error that stopped the pool.
func (mp *mediaPool) wait() ([]mediaResult, error) {
	close(mp.jobs)
	mp.wg.Wait()
	return mp.results, mp.err
}
