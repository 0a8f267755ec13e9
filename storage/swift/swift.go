// Package swift is the swift:// backup target: OpenStack Swift (OVH,
// Infomaniak, ...) through ncw/swift v2.
//
//	BACKUP_TARGET=swift://container/optional/prefix
//	BACKUP_SWIFT_AUTH_URL                      e.g. https://auth.cloud.ovh.net/v3 (required)
//	BACKUP_SWIFT_USER, BACKUP_SWIFT_KEY        user name and password, or
//	BACKUP_SWIFT_APPLICATION_CREDENTIAL_ID,
//	BACKUP_SWIFT_APPLICATION_CREDENTIAL_SECRET an application credential (v3)
//	BACKUP_SWIFT_REGION                        e.g. GRA (the first region when unset)
//	BACKUP_SWIFT_TENANT                        project (tenant) name
//	BACKUP_SWIFT_DOMAIN                        user and project domain (Default with v3)
//	BACKUP_SWIFT_SEGMENT_SIZE                  1MiB .. 5GiB (256MiB)
//
// Objects are streamed: a Put holds at most 4 MiB in memory (less when the
// segment size is smaller). An object that fits in that buffer is one PUT;
// a larger one is a Static Large Object whose segments (of the segment
// size, streamed one after the other) go to the container
// "<container>_segments", created on demand, so objects over Swift's 5 GB
// limit work. The container itself must exist.
package swift

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ncw/swift/v2"

	"github.com/mastodon-on-balena/mastodon-balena/bytesize"
	"github.com/mastodon-on-balena/mastodon-balena/problem"
	"github.com/mastodon-on-balena/mastodon-balena/storage"
	"github.com/mastodon-on-balena/mastodon-balena/storage/internal/stream"
)

// The variables.
const (
	EnvAuthURL          = "BACKUP_SWIFT_AUTH_URL"
	EnvUser             = "BACKUP_SWIFT_USER"
	EnvKey              = "BACKUP_SWIFT_KEY"
	EnvAppCredID        = "BACKUP_SWIFT_APPLICATION_CREDENTIAL_ID"
	EnvAppCredSecret    = "BACKUP_SWIFT_APPLICATION_CREDENTIAL_SECRET"
	EnvRegion           = "BACKUP_SWIFT_REGION"
	EnvTenant           = "BACKUP_SWIFT_TENANT"
	EnvDomain           = "BACKUP_SWIFT_DOMAIN"
	EnvSegmentSize      = "BACKUP_SWIFT_SEGMENT_SIZE"
	DefaultSegmentSize  = 256 << 20
	MinSegmentSize      = 1 << 20
	MaxSegmentSize      = 5 << 30 // Swift's default max_file_size (5 GiB + 2 bytes)
	DefaultDomain       = "Default"
	defaultBufferSize   = 4 << 20
	defaultMaxSegments  = 1000 // Swift's default slo max_manifest_segments
	segmentsSuffix      = "_segments"
	cleanupTimeout      = 30 * time.Second
	dataTimeout         = 5 * time.Minute // the reader may pause (pg_dump waiting for a lock)
	connectTimeout      = 15 * time.Second
	targetExample       = "swift://my-container/mastodon"
	authURLExample      = "https://auth.cloud.ovh.net/v3"
	contentType         = "application/octet-stream"
	multipartManifest   = "multipart-manifest"
	staticLargeObjectHd = "X-Static-Large-Object"
)

func init() {
	storage.Register(storage.Backend{
		Scheme:  "swift",
		Example: targetExample,
		Check: func(t storage.Target, getenv func(string) string) []problem.Problem {
			_, problems := ConfigFromEnv(t, getenv)
			return problems
		},
		Open: func(_ context.Context, t storage.Target, getenv func(string) string) (storage.Store, error) {
			cfg, problems := ConfigFromEnv(t, getenv)
			if len(problems) > 0 {
				return nil, problem.List(problems)
			}
			return New(cfg)
		},
	})
}

// Config is a Swift target.
type Config struct {
	Container string
	Prefix    string // inside the container, without leading or trailing '/'

	AuthURL string // v1 (…/auth/v1.0), v2 (…/v2.0) or v3 (…/v3) identity endpoint
	// User and Key, or an application credential (v3 only).
	User, Key                                            string
	ApplicationCredentialID, ApplicationCredentialSecret string
	Region                                               string
	Tenant                                               string // project
	Domain                                               string // user and project domain; Default with v3 when empty

	SegmentSize int64 // 0 means DefaultSegmentSize
	// BufferSize is the largest object sent as one plain PUT from memory;
	// 0 means min(4 MiB, SegmentSize). Larger objects are Static Large
	// Objects.
	BufferSize int64

	// Transport replaces the HTTP transport (tests); nil for the default.
	Transport http.RoundTripper
}

// ConfigFromEnv builds the Config for target t from the BACKUP_SWIFT_*
// variables, listing every problem (without network access).
func ConfigFromEnv(t storage.Target, getenv func(string) string) (Config, []problem.Problem) {
	cfg := Config{
		Container:                   t.Name,
		Prefix:                      t.Prefix,
		AuthURL:                     getenv(EnvAuthURL),
		User:                        getenv(EnvUser),
		Key:                         getenv(EnvKey),
		ApplicationCredentialID:     getenv(EnvAppCredID),
		ApplicationCredentialSecret: getenv(EnvAppCredSecret),
		Region:                      getenv(EnvRegion),
		Tenant:                      getenv(EnvTenant),
		Domain:                      getenv(EnvDomain),
	}
	size, p := storage.SizeVar(getenv, EnvSegmentSize, DefaultSegmentSize, MinSegmentSize, MaxSegmentSize)
	cfg.SegmentSize = size
	problems := cfg.check()
	if p != nil {
		problems = append(problems, *p)
	}
	return cfg, problems
}

// Check lists every problem with cfg, without network access.
func (cfg Config) Check() []problem.Problem { return cfg.check() }

func (cfg Config) check() []problem.Problem {
	var problems []problem.Problem
	add := func(v, what, ex string) {
		problems = append(problems, problem.Problem{Var: v, What: what, Example: ex})
	}
	switch c := cfg.Container; {
	case c == "":
		add(storage.TargetVar, "names no container: swift://CONTAINER/optional/prefix", targetExample)
	case len(c) > 256 || strings.ContainsAny(c, ":@"):
		add(storage.TargetVar, fmt.Sprintf("%q is not a valid container name", c), targetExample)
	}
	if cfg.AuthURL == "" {
		add(EnvAuthURL, "is not set; it is your provider's identity (Keystone) endpoint", authURLExample)
	} else if u, err := url.Parse(cfg.AuthURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		add(EnvAuthURL, fmt.Sprintf("%q is not an http(s):// URL", storage.RedactURL(cfg.AuthURL)), authURLExample)
	} else if u.User != nil {
		add(EnvAuthURL, fmt.Sprintf("%q contains credentials: use %s and %s", storage.RedactURL(cfg.AuthURL), EnvUser, EnvKey), authURLExample)
	} else if authVersion(cfg.AuthURL) == 0 {
		add(EnvAuthURL, fmt.Sprintf("%q names no auth version (v1.0, v2.0 or v3 in its path)", storage.RedactURL(cfg.AuthURL)), authURLExample)
	} else if cfg.usesAppCred() && authVersion(cfg.AuthURL) != 3 {
		add(EnvAuthURL, "application credentials need the v3 identity API: the URL should end in /v3", authURLExample)
	}
	appCred := cfg.ApplicationCredentialID != "" || cfg.ApplicationCredentialSecret != ""
	userKey := cfg.User != "" || cfg.Key != ""
	switch {
	case appCred && userKey:
		add(EnvUser, fmt.Sprintf("is set together with %s: use a user and key or an application credential, not both", EnvAppCredID), "")
	case appCred:
		if cfg.ApplicationCredentialID == "" {
			add(EnvAppCredID, "is not set, but "+EnvAppCredSecret+" is", "a1b2c3d4e5f60718293a4b5c6d7e8f90")
		}
		if cfg.ApplicationCredentialSecret == "" {
			add(EnvAppCredSecret, "is not set, but "+EnvAppCredID+" is", "the secret shown when the credential was created")
		}
	case userKey:
		if cfg.User == "" {
			add(EnvUser, "is not set, but "+EnvKey+" is", "user-abc123")
		}
		if cfg.Key == "" {
			add(EnvKey, "is not set, but "+EnvUser+" is", "the user's password")
		}
	default:
		add(EnvUser, fmt.Sprintf("is not set: set %s and %s, or %s and %s", EnvUser, EnvKey, EnvAppCredID, EnvAppCredSecret), "user-abc123")
	}
	if cfg.SegmentSize != 0 && (cfg.SegmentSize < MinSegmentSize || cfg.SegmentSize > MaxSegmentSize) {
		add(EnvSegmentSize, fmt.Sprintf("%s is outside %s..%s", bytesize.Format(cfg.SegmentSize), bytesize.Format(MinSegmentSize), bytesize.Format(MaxSegmentSize)), bytesize.Format(DefaultSegmentSize))
	}
	return problems
}

func (cfg Config) usesAppCred() bool {
	return cfg.ApplicationCredentialID != "" || cfg.ApplicationCredentialSecret != ""
}

// authVersion is the one ncw/swift infers from the URL (0: none).
func authVersion(authURL string) int {
	switch {
	case strings.Contains(authURL, "v3"):
		return 3
	case strings.Contains(authURL, "v2"):
		return 2
	case strings.Contains(authURL, "v1"):
		return 1
	}
	return 0
}

// Store is a container (and prefix) of a Swift account.
type Store struct {
	conn        *swift.Connection
	container   string
	segments    string // the segments container
	prefix      string
	authURL     string // redacted, for String
	segmentSize int64
	bufferSize  int64
	secrets     []string

	mu               sync.Mutex
	segmentsReady    bool
	maxSegments      int
	maxSegmentsKnown bool
}

var _ storage.Store = (*Store)(nil)

// New returns the store cfg describes. It makes no network request (the
// connection authenticates on first use).
func New(cfg Config) (*Store, error) {
	if problems := cfg.check(); len(problems) > 0 {
		return nil, problem.List(problems)
	}
	if cfg.SegmentSize == 0 {
		cfg.SegmentSize = DefaultSegmentSize
	}
	if cfg.BufferSize <= 0 || cfg.BufferSize > cfg.SegmentSize {
		cfg.BufferSize = min(defaultBufferSize, cfg.SegmentSize)
	}
	conn := &swift.Connection{
		AuthUrl:                     cfg.AuthURL,
		UserName:                    cfg.User,
		ApiKey:                      cfg.Key,
		ApplicationCredentialId:     cfg.ApplicationCredentialID,
		ApplicationCredentialSecret: cfg.ApplicationCredentialSecret,
		Region:                      cfg.Region,
		Tenant:                      cfg.Tenant,
		Domain:                      cfg.Domain,
		ConnectTimeout:              connectTimeout,
		Timeout:                     dataTimeout,
		Transport:                   cfg.Transport,
		Retries:                     1,
		UserAgent:                   "mastokeeper",
	}
	if authVersion(cfg.AuthURL) == 3 {
		conn.AuthVersion = 3
		if conn.Domain == "" {
			conn.Domain = DefaultDomain
		}
		if cfg.Tenant != "" {
			conn.TenantDomain = conn.Domain
		}
	}
	return &Store{
		conn:        conn,
		container:   cfg.Container,
		segments:    cfg.Container + segmentsSuffix,
		prefix:      cfg.Prefix,
		authURL:     storage.RedactURL(cfg.AuthURL),
		segmentSize: cfg.SegmentSize,
		bufferSize:  cfg.BufferSize,
		secrets:     []string{cfg.Key, cfg.ApplicationCredentialSecret, cfg.ApplicationCredentialID},
	}, nil
}

// String is e.g. "swift://container/prefix at https://auth.example.com/v3".
func (s *Store) String() string {
	t := "swift://" + s.container
	if s.prefix != "" {
		t += "/" + s.prefix
	}
	return t + " at " + s.authURL
}

// SegmentSize is the size of a large object's segments.
func (s *Store) SegmentSize() int64 { return s.segmentSize }

// SegmentsContainer is where large objects' segments go.
func (s *Store) SegmentsContainer() string { return s.segments }

func (s *Store) wrap(op, key string, err error) error {
	if err == nil {
		return nil
	}
	if permanent(err) {
		err = storage.Permanent(err)
	}
	return fmt.Errorf("swift: %s %s: %w", op, key, storage.RedactError(err, s.secrets...))
}

// permanent: the service said no for a reason a retry does not change.
func permanent(err error) bool {
	var se *swift.Error
	if !errors.As(err, &se) {
		return false
	}
	switch se.StatusCode {
	case 400, 401, 403, 404, 405, 411, 413, 422:
		return true
	}
	return false
}

func isNotFound(err error) bool {
	var se *swift.Error
	return errors.As(err, &se) && se.StatusCode == http.StatusNotFound
}

func (s *Store) name(key string) string { return storage.JoinKey(s.prefix, key) }

// Put streams r to key. An object that fits the in-memory buffer is one
// PUT, checked against its MD5 by the server; a larger one is uploaded as
// segments of SegmentSize into the segments container, then a Static Large
// Object manifest is put at key, last. A failing reader, a cancelled ctx or
// a service error leaves key as it was, and the segments uploaded so far
// are deleted. Replacing a large object deletes its old segments.
func (s *Store) Put(ctx context.Context, key string, r io.Reader) error {
	if err := storage.CheckKey(key); err != nil {
		return s.wrap("put", key, err)
	}
	if err := ctx.Err(); err != nil {
		return s.wrap("put", key, err)
	}
	name := s.name(key)
	src := stream.NewSource(ctx, r)
	buf, more, err := stream.ReadUpTo(src, int(s.bufferSize))
	if err != nil {
		return s.sourceError(ctx, key, src, err)
	}
	// The segments of the object being replaced, to delete once the new
	// one is in place.
	oldSegs, err := s.largeObjectSegments(ctx, name)
	if err != nil {
		return s.wrap("put", key, err)
	}
	if !more {
		sum := md5.Sum(buf)
		_, err := s.conn.ObjectPut(ctx, s.container, name, bytes.NewReader(buf), false, hex.EncodeToString(sum[:]), contentType,
			swift.Headers{"Content-Length": fmt.Sprint(len(buf))})
		if err != nil {
			if isNotFound(err) {
				err = s.containerMissing(err)
			}
			return s.sourceError(ctx, key, src, err)
		}
	} else {
		body := io.MultiReader(bytes.NewReader(buf), src)
		buf = nil
		if err := s.putLarge(ctx, key, name, src, body); err != nil {
			return err
		}
	}
	s.deleteSegments(ctx, oldSegs)
	return nil
}

func (s *Store) containerMissing(err error) error {
	return storage.Permanent(fmt.Errorf("container %q does not exist (create it with your provider's console or `swift post %s`): %w", s.container, s.container, err))
}

func (s *Store) sourceError(ctx context.Context, key string, src *stream.Source, err error) error {
	if src.Err() != nil {
		return s.wrap("put", key, storage.Permanent(fmt.Errorf("reading the data: %w", src.Err())))
	}
	if ctx.Err() != nil {
		return s.wrap("put", key, ctx.Err())
	}
	return s.wrap("put", key, err)
}

type sloSegment struct {
	Path string `json:"path"`
	Etag string `json:"etag"`
	Size int64  `json:"size_bytes"`
}

func (s *Store) putLarge(ctx context.Context, key, name string, src *stream.Source, body io.Reader) (err error) {
	if err := s.ensureSegmentsContainer(ctx); err != nil {
		return s.wrap("put", key, err)
	}
	maxSegs := s.maxManifestSegments(ctx)
	id := make([]byte, 6)
	_, _ = rand.Read(id)
	segPrefix := fmt.Sprintf("%s/slo/%d-%x", name, time.Now().Unix(), id)
	var segs []sloSegment
	uploaded := []string{}
	defer func() {
		if err != nil {
			s.deleteObjects(ctx, s.segments, uploaded)
		}
	}()
	// A 1-byte look-ahead tells whether another segment follows.
	br := &peekReader{r: body}
	for i := 1; ; i++ {
		if i > maxSegs {
			return s.wrap("put", key, storage.Permanent(fmt.Errorf("the object is larger than %d segments of %s; raise %s",
				maxSegs, bytesize.Format(s.segmentSize), EnvSegmentSize)))
		}
		segName := fmt.Sprintf("%s/%08d", segPrefix, i)
		h := &hashCounter{h: md5.New()}
		lr := io.TeeReader(io.LimitReader(br, s.segmentSize), h)
		uploaded = append(uploaded, segName)
		_, perr := s.conn.ObjectPut(ctx, s.segments, segName, lr, false, "", contentType, nil)
		if perr == nil && src.Err() == nil && ctx.Err() == nil {
			// A reader error after the last byte was sent would not fail
			// the PUT: make sure the whole segment came through.
			if h.n == s.segmentSize || br.eof {
				segs = append(segs, sloSegment{Path: "/" + s.segments + "/" + segName, Etag: hex.EncodeToString(h.h.Sum(nil)), Size: h.n})
			} else {
				perr = io.ErrUnexpectedEOF
			}
		}
		if perr != nil || src.Err() != nil || ctx.Err() != nil {
			return s.sourceError(ctx, key, src, perr)
		}
		if h.n < s.segmentSize {
			break // the source ended inside this segment
		}
		if more, perr := br.more(); perr != nil {
			return s.sourceError(ctx, key, src, perr)
		} else if !more {
			break
		}
	}
	manifest, err := json.Marshal(segs)
	if err != nil {
		return s.wrap("put", key, err)
	}
	if err := s.putManifest(ctx, name, manifest); err != nil {
		if isNotFound(err) {
			err = s.containerMissing(err)
		}
		return s.sourceError(ctx, key, src, err)
	}
	return nil
}

// putManifest PUTs a Static Large Object manifest (ncw/swift has no public
// call for it).
func (s *Store) putManifest(ctx context.Context, name string, manifest []byte) error {
	storageURL, err := s.storageURL(ctx)
	if err != nil {
		return err
	}
	_, _, err = s.conn.Call(ctx, storageURL, swift.RequestOpts{
		Container:  s.container,
		ObjectName: name,
		Operation:  http.MethodPut,
		Parameters: url.Values{multipartManifest: {"put"}},
		Headers: swift.Headers{
			"Content-Type":   contentType,
			"Content-Length": fmt.Sprint(len(manifest)),
		},
		Body:       bytes.NewReader(manifest),
		NoResponse: true,
		OnReAuth:   func() (string, error) { return s.conn.StorageUrl, nil },
	})
	return err
}

func (s *Store) storageURL(ctx context.Context) (string, error) {
	if !s.conn.Authenticated() {
		if err := s.conn.Authenticate(ctx); err != nil {
			return "", err
		}
	}
	u := s.conn.StorageUrl
	if u == "" {
		return "", errors.New("the identity service gave no storage URL")
	}
	return u, nil
}

func (s *Store) ensureSegmentsContainer(ctx context.Context) error {
	s.mu.Lock()
	ready := s.segmentsReady
	s.mu.Unlock()
	if ready {
		return nil
	}
	if _, _, err := s.conn.Container(ctx, s.segments); err != nil {
		if !isNotFound(err) {
			return err
		}
		if err := s.conn.ContainerCreate(ctx, s.segments, nil); err != nil {
			return fmt.Errorf("creating the segments container %q: %w", s.segments, err)
		}
	}
	s.mu.Lock()
	s.segmentsReady = true
	s.mu.Unlock()
	return nil
}

// maxManifestSegments is the service's limit on the segments of one large
// object (from /info), 1000 when it does not say.
func (s *Store) maxManifestSegments(ctx context.Context) int {
	s.mu.Lock()
	if s.maxSegmentsKnown {
		defer s.mu.Unlock()
		return s.maxSegments
	}
	s.mu.Unlock()
	n := defaultMaxSegments
	if info, err := s.conn.QueryInfo(ctx); err == nil {
		if slo, ok := info["slo"].(map[string]any); ok {
			if v, ok := slo["max_manifest_segments"].(float64); ok && v >= 1 {
				n = int(v)
			}
		}
	}
	s.mu.Lock()
	s.maxSegments, s.maxSegmentsKnown = n, true
	s.mu.Unlock()
	return n
}

// largeObjectSegments returns the names, in the segments container, of the
// segments of the large object at name; none when it is missing or plain.
func (s *Store) largeObjectSegments(ctx context.Context, name string) ([]string, error) {
	_, headers, err := s.conn.Object(ctx, s.container, name)
	if err != nil {
		if isNotFound(err) {
			return nil, nil
		}
		return nil, err
	}
	if !headers.IsLargeObjectSLO() {
		return nil, nil
	}
	segContainer, segs, err := s.conn.LargeObjectGetSegments(ctx, s.container, name)
	if err != nil {
		if isNotFound(err) {
			return nil, nil
		}
		return nil, err
	}
	// Only ever delete in our own segments container.
	if segContainer != s.segments {
		return nil, nil
	}
	names := make([]string, len(segs))
	for i, seg := range segs {
		names[i] = seg.Name
	}
	return names, nil
}

// deleteSegments deletes segments best-effort: a leftover segment wastes
// space but breaks nothing.
func (s *Store) deleteSegments(ctx context.Context, names []string) {
	s.deleteObjects(ctx, s.segments, names)
}

func (s *Store) deleteObjects(ctx context.Context, container string, names []string) {
	if len(names) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	for _, n := range names {
		if err := s.conn.ObjectDelete(ctx, container, n); err != nil && ctx.Err() != nil {
			return
		}
	}
}

// Get opens key; a missing key gives storage.ErrNotFound. A plain object's
// MD5 and length are checked as it is read: a mismatch is an error of the
// last Read.
func (s *Store) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	if err := storage.CheckKey(key); err != nil {
		return nil, s.wrap("get", key, err)
	}
	f, _, err := s.conn.ObjectOpen(ctx, s.container, s.name(key), true, nil)
	if err != nil {
		if isNotFound(err) {
			return nil, s.wrap("get", key, storage.ErrNotFound)
		}
		if ctx.Err() != nil {
			return nil, s.wrap("get", key, ctx.Err())
		}
		return nil, s.wrap("get", key, err)
	}
	return &reader{f: f, s: s, key: key}, nil
}

type reader struct {
	f      *swift.ObjectOpenFile
	s      *Store
	key    string
	closed bool
	cerr   error
}

func (r *reader) Read(p []byte) (int, error) {
	if r.closed {
		if r.cerr != nil {
			return 0, r.cerr
		}
		return 0, io.EOF
	}
	n, err := r.f.Read(p)
	if err == io.EOF {
		// Close checks the MD5 and the length: do it now, so a corrupt
		// object fails the read rather than a Close the caller may skip.
		r.closed = true
		if cerr := r.f.Close(); cerr != nil {
			r.cerr = r.s.wrap("get", r.key, cerr)
			return n, r.cerr
		}
		return n, io.EOF
	}
	if err != nil {
		err = r.s.wrap("get", r.key, err)
	}
	return n, err
}

func (r *reader) Close() error {
	if r.closed {
		return nil
	}
	r.closed = true
	return r.f.Close()
}

// List returns the objects whose key starts with prefix, sorted by key.
// A large object is listed with its whole size.
func (s *Store) List(ctx context.Context, prefix string) ([]storage.Object, error) {
	if err := storage.CheckPrefix(prefix); err != nil {
		return nil, s.wrap("list", prefix, err)
	}
	strip := ""
	if s.prefix != "" {
		strip = s.prefix + "/"
	}
	infos, err := s.conn.ObjectsAll(ctx, s.container, &swift.ObjectsOpts{Prefix: strip + prefix})
	if err != nil {
		if isNotFound(err) {
			err = s.containerMissing(err)
		}
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, s.wrap("list", prefix, err)
	}
	objs := make([]storage.Object, 0, len(infos))
	for _, info := range infos {
		if info.PseudoDirectory || strings.HasSuffix(info.Name, "/") || !strings.HasPrefix(info.Name, strip) {
			continue
		}
		objs = append(objs, storage.Object{Key: strings.TrimPrefix(info.Name, strip), Size: info.Bytes, ModTime: info.LastModified})
	}
	sort.Slice(objs, func(i, j int) bool { return objs[i].Key < objs[j].Key })
	return objs, nil
}

// Delete removes key, and its segments when it is a large object; a
// missing key is not an error. The manifest goes first: an interrupted
// Delete leaves stray segments, never a broken object.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := storage.CheckKey(key); err != nil {
		return s.wrap("delete", key, err)
	}
	name := s.name(key)
	segs, err := s.largeObjectSegments(ctx, name)
	if err != nil {
		return s.wrap("delete", key, err)
	}
	if err := s.conn.ObjectDelete(ctx, s.container, name); err != nil && !isNotFound(err) {
		return s.wrap("delete", key, err)
	}
	for _, seg := range segs {
		if err := s.conn.ObjectDelete(ctx, s.segments, seg); err != nil && !isNotFound(err) {
			return s.wrap("delete", key, fmt.Errorf("deleting segment %s: %w", seg, err))
		}
	}
	return nil
}

type hashCounter struct {
	h hash.Hash
	n int64
}

func (c *hashCounter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return c.h.Write(p)
}

// peekReader reads r with a one-byte look-ahead.
type peekReader struct {
	r    io.Reader
	b    [1]byte
	have bool
	eof  bool
}

func (p *peekReader) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	if p.have {
		b[0] = p.b[0]
		p.have = false
		return 1, nil
	}
	if p.eof {
		return 0, io.EOF
	}
	n, err := p.r.Read(b)
	if err == io.EOF {
		p.eof = true
	}
	return n, err
}

// more reports whether at least one more byte follows.
func (p *peekReader) more() (bool, error) {
	if p.have {
		return true, nil
	}
	if p.eof {
		return false, nil
	}
	for {
		n, err := p.r.Read(p.b[:])
		if n == 1 {
			p.have = true
			return true, nil
		}
		if err == io.EOF {
			p.eof = true
			return false, nil
		}
		if err != nil {
			return false, err
		}
	}
}
