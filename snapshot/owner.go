package snapshot

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/mastodon-on-balena/mastodon-balena/problem"
	"github.com/mastodon-on-balena/mastodon-balena/storage"
)

// ErrNotOwner means another device has taken over the target (a restore
// elsewhere): this one must stop writing there.
var ErrNotOwner = errors.New("another device owns this backup target")

// ErrOtherInstance means the target holds the backups of another instance
// (another backup key), even one with the same domain on the same device.
var ErrOtherInstance = errors.New("the backup target holds another instance's backups")

// ReadOwner reads and authenticates the target's owner record. A format 1
// record is returned, unauthenticated, with an errOldFormat error.
func ReadOwner(ctx context.Context, s storage.Store, k *Key) (*Owner, error) {
	rc, err := s.Get(ctx, OwnerKey)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	var o Owner
	raw, err := k.open("owner", OwnerKey, rc, 1<<16, &o)
	if errors.Is(err, errOldFormat) {
		o = Owner{}
		if jerr := json.Unmarshal(raw, &o); jerr != nil {
			return nil, fmt.Errorf("%w: %s is unreadable: %v", ErrCorrupt, OwnerKey, jerr)
		}
		if o.LocalDomain == "" || o.Device == "" {
			return nil, fmt.Errorf("%w: %s names no domain or no device", ErrCorrupt, OwnerKey)
		}
		return &o, err
	}
	if errors.Is(err, ErrUnauthentic) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, OwnerKey, err)
	}
	return &o, nil
}

// WriteOwner records, authenticated, which instance and device own the
// target from now on.
func WriteOwner(ctx context.Context, s storage.Store, k *Key, o Owner) error {
	return s.Put(ctx, OwnerKey, bytes.NewReader(k.seal("owner", OwnerKey, o)))
}

// Claim checks that this instance, on this device, may write to the
// target, and records it as the owner when the record is missing or old.
// The target belongs to this instance when its owner record authenticates
// with this instance's key, or - when that record is missing or in format
// 1 - when a backup there does. A target holding only backups this
// instance cannot authenticate is another instance's: it is never
// claimed, re-sealed or pruned.
func Claim(ctx context.Context, s storage.Store, k *Key, me Owner) error {
	o, err := ReadOwner(ctx, s, k)
	switch {
	case err == nil:
		if o.Device != me.Device {
			return &problem.Refused{Err: fmt.Errorf("%w: since %s the backups of %s at %s are written by device %s (the instance was restored there). This device stops writing to it. If this device is the one to keep, take the backups back with 'mastokeeper backup claim' (that device's backups are then refused), or restore the newest backup onto this device with 'mastokeeper restore --force'",
				ErrNotOwner, o.Since.Format(time.RFC3339), o.LocalDomain, s, o.Device)}
		}
		if o.InstanceID == me.InstanceID && o.LocalDomain == me.LocalDomain {
			return nil
		}
		return WriteOwner(ctx, s, k, me)
	case errors.Is(err, errOldFormat):
		if o.LocalDomain != me.LocalDomain {
			return &problem.Refused{Err: fmt.Errorf("%w: %s holds the backups of %s, not of this instance (%s): set BACKUP_TARGET to a place of this instance's own, e.g. another prefix (example: BACKUP_TARGET=s3://bucket/%s)", ErrOtherInstance, s, o.LocalDomain, me.LocalDomain, me.LocalDomain)}
		}
		if o.Device != me.Device {
			return &problem.Refused{Err: fmt.Errorf("%w: the backups of %s at %s are written by device %s. This device stops writing to it. If this device is the one to keep, take the backups back with 'mastokeeper backup claim', or restore the newest backup onto this device with 'mastokeeper restore --force'", ErrNotOwner, o.LocalDomain, s, o.Device)}
		}
	case errors.Is(err, storage.ErrNotFound):
	case errors.Is(err, ErrUnauthentic), errors.Is(err, ErrCorrupt):
		return &problem.Refused{Err: fmt.Errorf("%w: %s at %s does not authenticate with this instance's backup key: another instance wrote it (this one was provisioned anew, e.g. after its data was purged), or it was changed. Nothing was written there. "+
			"To take the old instance back, restore it: 'mastokeeper restore --force'. To keep this new instance, give it a place of its own: another BACKUP_TARGET or prefix (example: BACKUP_TARGET=s3://bucket/%s-2). "+
			"If the target is this instance's and only %s was damaged, delete that object: the next backup then checks the backups themselves", ErrOtherInstance, OwnerKey, s, me.LocalDomain, OwnerKey)}
	default:
		return err
	}
	// No owner record, or a format 1 one: the backups there decide.
	mine, foreign, err := backupsBy(ctx, s, k)
	if err != nil {
		return err
	}
	if foreign > 0 && mine == 0 {
		return &problem.Refused{Err: fmt.Errorf("%w: %s has %d backup(s) this instance's backup key cannot read, and none it can: they belong to another instance (or were forged). Nothing was written there. "+
			"To take that instance over, restore it: 'mastokeeper restore --force'. To keep this instance, give it a place of its own: another BACKUP_TARGET or prefix (example: BACKUP_TARGET=s3://bucket/%s-2)", ErrOtherInstance, s, foreign, me.LocalDomain)}
	}
	return WriteOwner(ctx, s, k, me)
}

// backupsBy counts the manifests on the target that this key authenticates
// (or, in format 1, whose instance record it decrypts) and those it does not.
func backupsBy(ctx context.Context, s storage.Store, k *Key) (mine, foreign int, err error) {
	r := &Reader{Store: s, Key: k, TrustOldFormat: true}
	l, err := r.List(ctx)
	if err != nil {
		return 0, 0, err
	}
	foreign = len(l.Unreadable)
	for _, m := range l.Snapshots {
		if m.Authenticated || r.decrypts(ctx, m) {
			mine++
		} else {
			foreign++
		}
	}
	return mine, foreign, nil
}

// decrypts says whether k opens a format 1 snapshot's instance record:
// only the key it was encrypted to does.
func (r *Reader) decrypts(ctx context.Context, m *Manifest) bool {
	rc, err := r.Store.Get(ctx, ObjectKey(m.ID, Secrets))
	if err != nil {
		return false
	}
	defer rc.Close()
	_, err = r.Key.Decrypt(rc)
	return err == nil
}

// TakeOver makes me the owner of a target whose owner record names another
// device of this same instance (the instance was restored there, and this
// device is the one to keep after all), once confirm agrees. It is Claim
// for a person who decided: the same rules keep another instance's target
// out of reach - only an owner record this instance's key authenticates,
// or an old-format one of this domain over backups this key reads, is
// taken over. It reports whether the owner record changed.
func TakeOver(ctx context.Context, s storage.Store, k *Key, me Owner, confirm func(current *Owner) bool) (bool, error) {
	o, err := ReadOwner(ctx, s, k)
	switch {
	case err == nil && o.Device == me.Device && o.InstanceID == me.InstanceID:
		return false, nil
	case err == nil:
	case errors.Is(err, errOldFormat) && o.LocalDomain == me.LocalDomain:
		mine, foreign, err := backupsBy(ctx, s, k)
		if err != nil {
			return false, err
		}
		if foreign > 0 && mine == 0 {
			return false, Claim(ctx, s, k, me) // refused, saying why
		}
		if o.Device == me.Device {
			return true, WriteOwner(ctx, s, k, me)
		}
	default:
		// No owner record, or another instance's: Claim's rules and words.
		if err := Claim(ctx, s, k, me); err != nil {
			return false, err
		}
		return true, nil
	}
	if !confirm(o) {
		return false, problem.Refusef("not claimed; nothing was changed")
	}
	return true, WriteOwner(ctx, s, k, me)
}
