package snapshot

import (
	"errors"
	"io"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// The dump is compressed as independent zstd frames of frameSize bytes,
// encoded by frameWorkers goroutines at once and written in order. Frames
// one after another are one valid zstd stream, which every decoder reads
// whole - the keeper's own of every release, and the zstd command line.
// One stream with history across the whole dump compresses on one core at
// about 80 MiB/s here, slower than pg_dump produces; two workers reach
// about 150 MiB/s at the same level. 2 MiB frames lose about 1% in size,
// since a frame's matches cannot reach into the frame before it; larger
// ones gain little and cost memory.
const (
	frameSize = 2 << 20
	// frameWorkers: two, even on a Pi's four cores, which PostgreSQL and
	// Mastodon need while the backup runs.
	frameWorkers = 2
)

// frameWriter is the io.WriteCloser that does it. Memory: frameWorkers+2
// frames of input and output buffers, and the encoders' state, about
// 20 MiB in all.
type frameWriter struct {
	w   io.Writer
	enc *zstd.Encoder

	cur   *frame      // the frame being filled
	order chan *frame // frames in input order, to the writing goroutine
	jobs  chan *frame // to the encoding goroutines
	free  chan *frame // written frames, their buffers to use again
	wg    sync.WaitGroup
	done  chan struct{} // the writing goroutine is finished

	mu      sync.Mutex
	err     error // the first failure to write
	written bool  // a frame was submitted
	closed  bool
}

type frame struct {
	in, out []byte
	ready   chan struct{} // one value once out is encoded
}

func newFrameWriter(w io.Writer, level zstd.EncoderLevel) (*frameWriter, error) {
	// No frame checksums: age authenticates every byte, and the
	// manifest holds the object's SHA-256. They cost 1.5% of the time.
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(level), zstd.WithEncoderConcurrency(frameWorkers),
		zstd.WithWindowSize(frameSize), zstd.WithEncoderCRC(false))
	if err != nil {
		return nil, err
	}
	fw := &frameWriter{w: w, enc: enc, order: make(chan *frame, frameWorkers), jobs: make(chan *frame, frameWorkers),
		free: make(chan *frame, frameWorkers+2), done: make(chan struct{})}
	for range frameWorkers {
		fw.wg.Add(1)
		go fw.encode()
	}
	go fw.write()
	return fw, nil
}

func (fw *frameWriter) encode() {
	defer fw.wg.Done()
	for f := range fw.jobs {
		f.out = fw.enc.EncodeAll(f.in, f.out[:0])
		f.ready <- struct{}{}
	}
}

func (fw *frameWriter) write() {
	defer close(fw.done)
	for f := range fw.order {
		<-f.ready
		if fw.failed() == nil {
			if _, err := fw.w.Write(f.out); err != nil {
				fw.fail(err)
			}
		}
		f.in = f.in[:0]
		select {
		case fw.free <- f:
		default:
		}
	}
}

func (fw *frameWriter) failed() error {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	return fw.err
}

func (fw *frameWriter) fail(err error) {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	if fw.err == nil {
		fw.err = err
	}
}

// submit hands the filled frame to the workers; it blocks while
// frameWorkers frames wait to be written, which bounds the memory.
func (fw *frameWriter) submit() {
	f := fw.cur
	fw.order <- f
	fw.jobs <- f
	fw.written = true
	fw.cur = nil
}

// next is a frame to fill: a written one again, or a new one.
func (fw *frameWriter) next() *frame {
	select {
	case f := <-fw.free:
		return f
	default:
		return &frame{in: make([]byte, 0, frameSize), ready: make(chan struct{}, 1)}
	}
}

func (fw *frameWriter) Write(p []byte) (int, error) {
	if fw.closed {
		return 0, errors.New("zstd frames: write after close")
	}
	n := 0
	for len(p) > 0 {
		if err := fw.failed(); err != nil {
			return n, err
		}
		if fw.cur == nil {
			fw.cur = fw.next()
		}
		in := fw.cur.in
		c := copy(in[len(in):frameSize], p)
		fw.cur.in = in[:len(in)+c]
		p, n = p[c:], n+c
		if len(fw.cur.in) == frameSize {
			fw.submit()
		}
	}
	return n, nil
}

// Close compresses what is left, waits until every frame is written and
// returns the first failure. An empty input is one empty frame: a valid
// stream, as before.
func (fw *frameWriter) Close() error {
	if fw.closed {
		return fw.failed()
	}
	fw.closed = true
	if fw.cur != nil || !fw.written {
		if fw.cur == nil {
			fw.cur = fw.next()
		}
		fw.submit()
	}
	close(fw.jobs)
	close(fw.order)
	fw.wg.Wait()
	<-fw.done
	fw.enc.Close()
	return fw.failed()
}
