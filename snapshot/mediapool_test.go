package snapshot

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mastodon-on-balena/mastodon-balena/storage"
	"github.com/mastodon-on-balena/mastodon-balena/storage/s3"
	"github.com/mastodon-on-balena/mastodon-balena/storage/storagetest"
)

// countingStore counts the blob uploads and holds each a moment, so that
// uploads overlap as they do against a distant object store.
type countingStore struct {
	storage.Store
	mu      sync.Mutex
	puts    map[string]int
	running atomic.Int32
	most    atomic.Int32
	fail    error
}

func (c *countingStore) Put(ctx context.Context, key string, r io.Reader) error {
	if strings.HasPrefix(key, MediaPrefix) {
		n := c.running.Add(1)
		defer c.running.Add(-1)
		for m := c.most.Load(); n > m && !c.most.CompareAndSwap(m, n); m = c.most.Load() {
		}
		c.mu.Lock()
		c.puts[key]++
		c.mu.Unlock()
		time.Sleep(5 * time.Millisecond)
		if c.fail != nil {
			io.Copy(io.Discard, r)
			return c.fail
		}
	}
	return c.Store.Put(ctx, key, r)
}

func poolBackup(t *testing.T, concurrency int) (*Backup, *countingStore, string) {
	b, media := newMediaBackup(t)
	cs := &countingStore{Store: b.Store, puts: map[string]int{}}
	b.Store, b.MediaConcurrency = cs, concurrency
	return b, cs, media
}

// Files are uploaded several at once; files that share their content - at
// the same moment - store one blob, once; the index keeps the walk's
// order.
func TestMediaIsUploadedSeveralAtOnceEachBlobOnce(t *testing.T) {
	b, cs, media := poolBackup(t, 4)
	var want []string
	for i := range 40 {
		p := fmt.Sprintf("media_attachments/files/%03d/original/f.png", i)
		write(t, filepath.Join(media, p), []byte(fmt.Sprintf("content %d", i%10))) // 10 contents, 4 files each
		want = append(want, p)
	}
	res := &Result{Manifest: &Manifest{ID: NewID(base)}}
	if err := b.backupMedia(context.Background(), b.Log, res); err != nil {
		t.Fatal(err)
	}
	if len(cs.puts) != 10 || len(res.Uploaded) != 10 || len(res.Manifest.MediaBlobs) != 10 || res.Manifest.MediaFiles != 40 {
		t.Errorf("%d blobs stored, %d uploaded, %d in the manifest for %d files; want 10, 10, 10, 40", len(cs.puts), len(res.Uploaded), len(res.Manifest.MediaBlobs), res.Manifest.MediaFiles)
	}
	for key, n := range cs.puts {
		if n != 1 {
			t.Errorf("%s uploaded %d times", key, n)
		}
	}
	if m := cs.most.Load(); m < 2 || m > 4 {
		t.Errorf("at most %d uploads ran at once; want 2 to 4", m)
	}
	// The index, as stored, in the walk's order.
	rd := &Reader{Store: b.Store, Key: b.Key}
	rc, err := rd.Object(context.Background(), res.Manifest, MediaIndex)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var index []MediaEntry
	if err := json.NewDecoder(rc).Decode(&index); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range index {
		got = append(got, e.Path)
	}
	if !slices.Equal(got, want) {
		t.Errorf("index order %v", got)
	}
}

// A target that fails stops the backup with its error, not as a list of
// skipped files.
func TestAFailingTargetStopsTheMediaBackup(t *testing.T) {
	b, cs, media := poolBackup(t, 4)
	cs.fail = errors.New("503 slow down")
	for i := range 30 {
		write(t, filepath.Join(media, fmt.Sprintf("accounts/%d.png", i)), []byte(fmt.Sprint(i)))
	}
	res := &Result{Manifest: &Manifest{ID: NewID(base)}}
	err := b.backupMedia(context.Background(), b.Log, res)
	if err == nil || !strings.Contains(err.Error(), "503 slow down") {
		t.Errorf("err = %v, want the target's", err)
	}
	if len(res.Skipped) > 0 {
		t.Errorf("files skipped instead of failing: %v", res.Skipped)
	}
}

// latencyStore answers each media upload after a round trip's delay, as a
// distant object store does.
type latencyStore struct {
	storage.Store
	rtt time.Duration
}

func (l latencyStore) Put(ctx context.Context, key string, r io.Reader) error {
	time.Sleep(l.rtt)
	return l.Store.Put(ctx, key, r)
}

// How the number of uploads at once pays against a store 20 ms away
// (500 small files, each new):
//
//	go test ./snapshot -run '^$' -bench MediaConcurrency -benchtime 1x
func BenchmarkMediaConcurrency(b *testing.B) {
	for _, n := range []int{1, 2, 4, 8, 16} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				bk, media := newMediaBackup(b)
				bk.Store, bk.MediaConcurrency = latencyStore{bk.Store, 20 * time.Millisecond}, n
				for i := range 500 {
					write(b, filepath.Join(media, fmt.Sprintf("accounts/%03d/a.png", i)), []byte(strings.Repeat(fmt.Sprint(i), 4000)))
				}
				b.StartTimer()
				if err := bk.backupMedia(context.Background(), bk.Log, &Result{Manifest: &Manifest{ID: NewID(base)}}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// latencyTransport adds a round trip's delay to every request: what a
// distant object store costs each upload. (tc netem is what the issue
// suggested, but this machine's kernel has no netem qdisc.)
type latencyTransport struct {
	rt  http.RoundTripper
	rtt time.Duration
}

func (l latencyTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	time.Sleep(l.rtt)
	return l.rt.RoundTrip(r)
}

// The same against a real S3 server (versitygw) through the S3 client the
// keeper uses, each request 20 ms late:
//
//	go test ./snapshot -run '^$' -bench MediaConcurrencyS3 -benchtime 1x
func BenchmarkMediaConcurrencyS3(b *testing.B) {
	gw := storagetest.StartVersityGW(b)
	for _, n := range []int{1, 2, 4, 8, 16} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				bk := newS3MediaBackup(b, gw, n, 500)
				b.StartTimer()
				if err := bk.backupMedia(context.Background(), bk.Log, &Result{Manifest: &Manifest{ID: NewID(base)}}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// newS3MediaBackup is a media backup of `files` new small files to versitygw
// through a transport that makes each request 20 ms late.
func newS3MediaBackup(b *testing.B, gw *storagetest.VersityGW, concurrency, files int) *Backup {
	bk, media := newMediaBackup(b)
	st, err := s3.New(s3.Config{Bucket: gw.Bucket, Prefix: fmt.Sprintf("bench-%d-%d", concurrency, time.Now().UnixNano()), Endpoint: gw.Endpoint,
		Region: gw.Region, AccessKeyID: gw.AccessKey, SecretAccessKey: gw.SecretKey, PathStyle: s3.PathStyleTrue,
		Transport: latencyTransport{http.DefaultTransport, 20 * time.Millisecond}})
	if err != nil {
		b.Fatal(err)
	}
	bk.Store, bk.MediaConcurrency = st, concurrency
	for i := range files {
		write(b, filepath.Join(media, fmt.Sprintf("accounts/%03d/%d.png", i%1000, i)), []byte(strings.Repeat(fmt.Sprint(i), 4000)))
	}
	return bk
}

// Issue 10's media target: the media backup of many small files (20,000,
// or MASTOKEEPER_BENCH_MEDIA_FILES) to versitygw 20 ms away, at the default
// concurrency, as a share of the time one request at a time takes. It
// prints the figure (x_one_at_a_time); the target is <= 0.25.
//
//	go test ./snapshot -run '^$' -bench MediaTarget -benchtime 1x -timeout 30m
func BenchmarkMediaTarget(b *testing.B) {
	files := 20_000
	if v := os.Getenv("MASTOKEEPER_BENCH_MEDIA_FILES"); v != "" {
		if _, err := fmt.Sscan(v, &files); err != nil || files < 1 {
			b.Fatalf("MASTOKEEPER_BENCH_MEDIA_FILES=%q: want a number of files, such as 2000", v)
		}
	}
	gw := storagetest.StartVersityGW(b)
	timed := func(concurrency int) time.Duration {
		bk := newS3MediaBackup(b, gw, concurrency, files)
		start := time.Now()
		if err := bk.backupMedia(context.Background(), bk.Log, &Result{Manifest: &Manifest{ID: NewID(base)}}); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	for b.Loop() {
		one := timed(1)
		def := timed(DefaultMediaConcurrency)
		b.ReportMetric(one.Seconds(), "s_one_at_a_time")
		b.ReportMetric(def.Seconds(), "s_default")
		b.ReportMetric(def.Seconds()/one.Seconds(), "x_one_at_a_time")
		b.ReportMetric(float64(files), "files")
	}
}

// The uploads at once hold at most smallBudget of small files, one large
// file at a time, and a single file larger than the budget still goes.
func TestUploadsAtOnceStayWithinTheirMemory(t *testing.T) {
	s := &storedBlobs{}
	var mu sync.Mutex
	var small, most int64
	var large, mostLarge int
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := int64(3 << 20)
			if i%5 == 0 {
				n = 50 << 20
			}
			release := s.hold(n)
			mu.Lock()
			if n > largeMedia {
				large++
				mostLarge = max(mostLarge, large)
			} else {
				small += n
				most = max(most, small)
			}
			mu.Unlock()
			time.Sleep(2 * time.Millisecond)
			mu.Lock()
			if n > largeMedia {
				large--
			} else {
				small -= n
			}
			mu.Unlock()
			release()
		}()
	}
	wg.Wait()
	if most > smallBudget || mostLarge != 1 {
		t.Errorf("held at most %d MiB of small files and %d large ones at once; want <= %d MiB and 1", most>>20, mostLarge, smallBudget>>20)
	}
}
