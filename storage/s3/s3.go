// Package s3 is the s3:// backup target: any S3-compatible service (AWS,
// Backblaze B2, Cloudflare R2, Wasabi, MinIO, Garage, versitygw) through
// minio-go v7.
//
//	BACKUP_TARGET=s3://bucket/optional/prefix
//	BACKUP_S3_ENDPOINT            host[:port] or http(s)://host[:port]   (s3.amazonaws.com)
//	BACKUP_S3_REGION              e.g. us-east-1                         (asked from the service)
//	BACKUP_S3_ACCESS_KEY_ID       required
//	BACKUP_S3_SECRET_ACCESS_KEY   required
//	BACKUP_S3_PATH_STYLE          auto | true | false                    (auto)
//	BACKUP_S3_PART_SIZE           5MiB .. 5GiB                           (16MiB)
//
// An object is uploaded in parts of BACKUP_S3_PART_SIZE, one at a time: the
// memory a Put uses is about one part. An object has at most 10,000 parts
// (156 GiB with 16 MiB parts).
package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/mastodon-on-balena/mastodon-balena/bytesize"
	"github.com/mastodon-on-balena/mastodon-balena/problem"
	"github.com/mastodon-on-balena/mastodon-balena/storage"
	"github.com/mastodon-on-balena/mastodon-balena/storage/internal/stream"
)

// The variables.
const (
	EnvEndpoint  = "BACKUP_S3_ENDPOINT"
	EnvRegion    = "BACKUP_S3_REGION"
	EnvAccessKey = "BACKUP_S3_ACCESS_KEY_ID"
	EnvSecretKey = "BACKUP_S3_SECRET_ACCESS_KEY"
	EnvPathStyle = "BACKUP_S3_PATH_STYLE"
	EnvPartSize  = "BACKUP_S3_PART_SIZE"
)

// Defaults and limits.
const (
	DefaultEndpoint = "s3.amazonaws.com"
	DefaultPartSize = 16 << 20
	MinPartSize     = 5 << 20 // S3's minimum for every part but the last
	MaxPartSize     = 5 << 30 // S3's maximum part size
	// smallObjectMax: an object up to this size (capped at the part size) is
	// read into memory and sent in one PUT; a larger one goes as a multipart
	// upload.
	smallObjectMax = 4 << 20
	// maxRetries is minio-go's own retries of one request (a part is
	// retried from memory); storage.WithRetry retries whole operations.
	maxRetries = 3
)

const targetExample = "s3://my-bucket/mastodon"

func init() {
	storage.Register(storage.Backend{
		Scheme:  "s3",
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

// PathStyle is how buckets are addressed.
type PathStyle string

const (
	PathStyleAuto  PathStyle = "auto"  // virtual-host style for AWS and a few others, path style elsewhere
	PathStyleTrue  PathStyle = "true"  // https://endpoint/bucket/key
	PathStyleFalse PathStyle = "false" // https://bucket.endpoint/key
)

// Config is an S3 target.
type Config struct {
	Bucket string
	Prefix string // inside the bucket, without leading or trailing '/'

	// Endpoint is host[:port] (HTTPS) or an http:// or https:// URL.
	Endpoint        string
	Region          string // empty: asked from the service
	AccessKeyID     string
	SecretAccessKey string
	PathStyle       PathStyle // empty means auto
	PartSize        int64     // 0 means DefaultPartSize

	// Transport replaces the HTTP transport (tests); nil for the default.
	Transport http.RoundTripper
}

// ConfigFromEnv builds the Config for target t from the BACKUP_S3_*
// variables, listing every problem (without network access).
func ConfigFromEnv(t storage.Target, getenv func(string) string) (Config, []problem.Problem) {
	cfg := Config{
		Bucket:          t.Name,
		Prefix:          t.Prefix,
		Endpoint:        getenv(EnvEndpoint),
		Region:          getenv(EnvRegion),
		AccessKeyID:     getenv(EnvAccessKey),
		SecretAccessKey: getenv(EnvSecretKey),
		PathStyle:       PathStyle(strings.ToLower(strings.TrimSpace(getenv(EnvPathStyle)))),
	}
	var problems []problem.Problem
	if cfg.Endpoint == "" {
		cfg.Endpoint = DefaultEndpoint
	}
	if cfg.PathStyle == "" {
		cfg.PathStyle = PathStyleAuto
	}
	size, p := storage.SizeVar(getenv, EnvPartSize, DefaultPartSize, MinPartSize, MaxPartSize)
	cfg.PartSize = size
	problems = append(problems, cfg.check()...)
	if p != nil {
		problems = append(problems, *p)
	}
	return cfg, problems
}

var (
	bucketRE    = regexp.MustCompile(`^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$`)
	hostLikeRE  = regexp.MustCompile(`(?i)(^|\.)(amazonaws\.com|backblazeb2\.com|r2\.cloudflarestorage\.com|wasabisys\.com|digitaloceanspaces\.com)$`)
	ipAddressRE = regexp.MustCompile(`^\d+\.\d+\.\d+\.\d+$`)
)

// Check lists every problem with cfg, without network access.
func (cfg Config) Check() []problem.Problem {
	return cfg.check()
}

func (cfg Config) check() []problem.Problem {
	var problems []problem.Problem
	target := func(what string) {
		problems = append(problems, problem.Problem{Var: storage.TargetVar, What: what, Example: targetExample})
	}
	b := cfg.Bucket
	switch {
	case b == "":
		target("names no bucket: s3://BUCKET/optional/prefix")
	case strings.Contains(b, ":"):
		target(fmt.Sprintf("bucket %q has a port: the service's address goes in %s, the bucket alone in BACKUP_TARGET", b, EnvEndpoint))
	case hostLikeRE.MatchString(b):
		target(fmt.Sprintf("bucket %q looks like a service address: put it in %s and the bucket in BACKUP_TARGET", b, EnvEndpoint))
	case !bucketRE.MatchString(b) || strings.Contains(b, "..") || ipAddressRE.MatchString(b):
		target(fmt.Sprintf("%q is not a valid bucket name (3 to 63 lowercase letters, digits, '-' and '.')", b))
	}
	if _, _, err := parseEndpoint(cfg.Endpoint); err != nil {
		problems = append(problems, problem.Problem{Var: EnvEndpoint, What: err.Error(), Example: "https://s3.eu-central-003.backblazeb2.com"})
	}
	if cfg.Region != "" && strings.ContainsAny(cfg.Region, " /:") {
		problems = append(problems, problem.Problem{Var: EnvRegion, What: fmt.Sprintf("%q is not a region name", cfg.Region), Example: "us-east-1"})
	}
	if cfg.AccessKeyID == "" {
		problems = append(problems, problem.Problem{Var: EnvAccessKey, What: "is not set; S3 targets need the access key of a key pair allowed to read, write, list and delete in the bucket", Example: "AKIAIOSFODNN7EXAMPLE"})
	}
	if cfg.SecretAccessKey == "" {
		problems = append(problems, problem.Problem{Var: EnvSecretKey, What: "is not set; S3 targets need the secret key that goes with " + EnvAccessKey, Example: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"})
	}
	switch cfg.PathStyle {
	case "", PathStyleAuto, PathStyleTrue, PathStyleFalse:
	default:
		problems = append(problems, problem.Problem{Var: EnvPathStyle, What: fmt.Sprintf("%q is not auto, true or false", string(cfg.PathStyle)), Example: "auto"})
	}
	if cfg.PartSize != 0 && (cfg.PartSize < MinPartSize || cfg.PartSize > MaxPartSize) {
		problems = append(problems, problem.Problem{Var: EnvPartSize, What: fmt.Sprintf("%s is outside %s..%s", bytesize.Format(cfg.PartSize), bytesize.Format(MinPartSize), bytesize.Format(MaxPartSize)), Example: bytesize.Format(DefaultPartSize)})
	}
	return problems
}

// parseEndpoint accepts host[:port] (HTTPS) or http(s)://host[:port][/].
func parseEndpoint(ep string) (hostport string, secure bool, err error) {
	shown := storage.RedactURL(ep)
	if ep == "" {
		return "", false, errors.New("is empty")
	}
	if strings.TrimSpace(ep) != ep {
		return "", false, fmt.Errorf("%q has spaces around it", shown)
	}
	raw := ep
	secure = true
	if !strings.Contains(ep, "://") {
		raw = "https://" + ep
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", false, fmt.Errorf("%q is not host[:port] or an http(s):// URL", shown)
	}
	switch u.Scheme {
	case "https":
	case "http":
		secure = false
	default:
		return "", false, fmt.Errorf("%q: scheme %q is not http or https", shown, u.Scheme)
	}
	if u.User != nil {
		return "", false, fmt.Errorf("%q contains credentials: use %s and %s", shown, EnvAccessKey, EnvSecretKey)
	}
	if u.Host == "" || u.Hostname() == "" {
		return "", false, fmt.Errorf("%q has no host", shown)
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return "", false, fmt.Errorf("%q has a path or query: give the service's address alone (the bucket goes in BACKUP_TARGET)", shown)
	}
	return u.Host, secure, nil
}

// Store is a bucket (and prefix) of an S3-compatible service.
type Store struct {
	client   *minio.Client
	bucket   string
	prefix   string
	endpoint string // scheme://host[:port], for String
	partSize int64
	secrets  []string
}

var _ storage.Store = (*Store)(nil)

// New returns the store cfg describes. It makes no network request.
func New(cfg Config) (*Store, error) {
	if problems := cfg.check(); len(problems) > 0 {
		return nil, problem.List(problems)
	}
	if cfg.PartSize == 0 {
		cfg.PartSize = DefaultPartSize
	}
	hostport, secure, _ := parseEndpoint(cfg.Endpoint)
	lookup := minio.BucketLookupAuto
	switch cfg.PathStyle {
	case PathStyleTrue:
		lookup = minio.BucketLookupPath
	case PathStyleFalse:
		lookup = minio.BucketLookupDNS
	}
	secrets := []string{cfg.AccessKeyID, cfg.SecretAccessKey}
	client, err := minio.New(hostport, &minio.Options{
		Creds:        credentials.NewStaticV4(cfg.AccessKeyID, cfg.SecretAccessKey, ""),
		Secure:       secure,
		Region:       cfg.Region,
		BucketLookup: lookup,
		Transport:    cfg.Transport,
		MaxRetries:   maxRetries,
	})
	if err != nil {
		return nil, fmt.Errorf("s3: %w", storage.RedactError(err, secrets...))
	}
	scheme := "https"
	if !secure {
		scheme = "http"
	}
	return &Store{
		client:   client,
		bucket:   cfg.Bucket,
		prefix:   cfg.Prefix,
		endpoint: scheme + "://" + hostport,
		partSize: cfg.PartSize,
		secrets:  secrets,
	}, nil
}

// String is e.g. "s3://bucket/prefix at https://s3.example.com".
func (s *Store) String() string {
	t := "s3://" + s.bucket
	if s.prefix != "" {
		t += "/" + s.prefix
	}
	return t + " at " + s.endpoint
}

// PartSize is the size of the parts of a multipart upload.
func (s *Store) PartSize() int64 { return s.partSize }

// wrap gives err context, redacts it and marks it permanent when retrying
// cannot help.
func (s *Store) wrap(op, key string, err error) error {
	if err == nil {
		return nil
	}
	if !errors.Is(err, storage.ErrNotFound) && !errors.Is(err, storage.ErrInvalidKey) && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		if permanent(err) {
			err = storage.Permanent(err)
		}
	}
	return fmt.Errorf("s3: %s %s: %w", op, key, storage.RedactError(err, s.secrets...))
}

// permanent: the service said no for a reason a retry does not change.
func permanent(err error) bool {
	resp := minio.ToErrorResponse(err)
	switch resp.Code {
	case "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "NoSuchBucket",
		"InvalidBucketName", "AllAccessDisabled", "AccountProblem", "InvalidObjectName",
		"KeyTooLongError", "EntityTooLarge", "AuthorizationHeaderMalformed", "MethodNotAllowed":
		return true
	}
	if resp.StatusCode >= 400 && resp.StatusCode < 500 && resp.StatusCode != http.StatusRequestTimeout && resp.StatusCode != http.StatusTooManyRequests && resp.StatusCode != http.StatusConflict {
		return true
	}
	return false
}

func isNotFound(err error) bool {
	code := minio.ToErrorResponse(err).Code
	return code == "NoSuchKey" || code == "NotFound"
}

// Put streams r to key: an object up to 4 MiB (or the part size, if
// smaller) in one PUT, a larger one as a multipart upload of PartSize parts,
// one part in memory at a time. A failing reader, a cancelled ctx or a
// service error aborts the upload: nothing appears under key.
func (s *Store) Put(ctx context.Context, key string, r io.Reader) error {
	if err := storage.CheckKey(key); err != nil {
		return s.wrap("put", key, err)
	}
	name := storage.JoinKey(s.prefix, key)
	src := stream.NewSource(ctx, r)
	small := int64(smallObjectMax)
	if small > s.partSize {
		small = s.partSize
	}
	opts := minio.PutObjectOptions{
		ContentType: "application/octet-stream",
		PartSize:    uint64(s.partSize), // never 0: minio-go would buffer ~537 MiB parts
		NumThreads:  1,
	}
	buf, more, err := stream.ReadUpTo(src, int(small))
	if err != nil {
		return s.sourceError(ctx, key, src, err)
	}
	if !more {
		_, err = s.client.PutObject(ctx, s.bucket, name, bytes.NewReader(buf), int64(len(buf)), opts)
		if err != nil {
			return s.wrap("put", key, err)
		}
		return nil
	}
	body := io.MultiReader(bytes.NewReader(buf), src)
	buf = nil
	_, err = s.client.PutObject(ctx, s.bucket, name, body, -1, opts)
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		// minio-go aborts a failed upload with ctx, which is done: abort
		// what is left of it with a context of our own.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
		_ = s.client.RemoveIncompleteUpload(cctx, s.bucket, name)
		cancel()
	}
	if src.Err() != nil || ctx.Err() != nil {
		return s.sourceError(ctx, key, src, err)
	}
	return s.wrap("put", key, err)
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

// Get opens key; a missing key gives storage.ErrNotFound.
func (s *Store) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	if err := storage.CheckKey(key); err != nil {
		return nil, s.wrap("get", key, err)
	}
	obj, err := s.client.GetObject(ctx, s.bucket, storage.JoinKey(s.prefix, key), minio.GetObjectOptions{})
	if err != nil {
		return nil, s.wrap("get", key, err)
	}
	// GetObject is lazy: Stat sends the GET, whose body Read then uses.
	if _, err := obj.Stat(); err != nil {
		obj.Close()
		if isNotFound(err) {
			return nil, s.wrap("get", key, storage.ErrNotFound)
		}
		if ctx.Err() != nil {
			return nil, s.wrap("get", key, ctx.Err())
		}
		return nil, s.wrap("get", key, err)
	}
	return &reader{obj: obj, s: s, key: key}, nil
}

// reader redacts the errors of reading an object.
type reader struct {
	obj *minio.Object
	s   *Store
	key string
}

func (r *reader) Read(p []byte) (int, error) {
	n, err := r.obj.Read(p)
	if err != nil && err != io.EOF {
		err = r.s.wrap("get", r.key, err)
	}
	return n, err
}

func (r *reader) Close() error { return r.obj.Close() }

// List returns the objects whose key starts with prefix, sorted by key.
func (s *Store) List(ctx context.Context, prefix string) ([]storage.Object, error) {
	if err := storage.CheckPrefix(prefix); err != nil {
		return nil, s.wrap("list", prefix, err)
	}
	full := prefix
	strip := ""
	if s.prefix != "" {
		strip = s.prefix + "/"
		full = strip + prefix
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var objs []storage.Object
	for info := range s.client.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: full, Recursive: true}) {
		if info.Err != nil {
			if ctx.Err() != nil {
				return nil, s.wrap("list", prefix, ctx.Err())
			}
			return nil, s.wrap("list", prefix, info.Err)
		}
		if strings.HasSuffix(info.Key, "/") || !strings.HasPrefix(info.Key, strip) {
			continue // a "directory" marker
		}
		objs = append(objs, storage.Object{Key: strings.TrimPrefix(info.Key, strip), Size: info.Size, ModTime: info.LastModified})
	}
	if err := ctx.Err(); err != nil {
		return nil, s.wrap("list", prefix, err)
	}
	sort.Slice(objs, func(i, j int) bool { return objs[i].Key < objs[j].Key })
	return objs, nil
}

// Delete removes key; a missing key is not an error.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := storage.CheckKey(key); err != nil {
		return s.wrap("delete", key, err)
	}
	err := s.client.RemoveObject(ctx, s.bucket, storage.JoinKey(s.prefix, key), minio.RemoveObjectOptions{})
	if err != nil && !isNotFound(err) {
		return s.wrap("delete", key, err)
	}
	return nil
}
