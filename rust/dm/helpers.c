// SPDX-License-Identifier: GPL-2.0
/*
 * See helpers.h. Each function wraps one inline function or macro, nothing more, except the
 * module's global rw_semaphore, which is defined here statically.
 */
#include <linux/delay.h>
#include <linux/module.h>
#include "helpers.h"

void rthin_bio_set_dev(struct bio *bio, struct block_device *bdev)
{
	bio_set_dev(bio, bdev);
}

sector_t rthin_bdev_nr_sectors(struct block_device *bdev)
{
	return bdev_nr_sectors(bdev);
}

unsigned int rthin_bdev_max_discard_sectors(struct block_device *bdev)
{
	return bdev_max_discard_sectors(bdev);
}

void rthin_discard_range(struct block_device *bdev, sector_t sector, sector_t nr_sects,
			 struct bio **chain)
{
	__blkdev_issue_discard(bdev, sector, nr_sects, GFP_NOIO, chain);
}

struct bio *rthin_bio_alloc_noio(void)
{
	return bio_alloc(NULL, 0, 0, GFP_NOIO);
}

void rthin_init_completion(struct completion *x)
{
	init_completion(x);
}

void rthin_might_sleep(void)
{
	might_sleep();
}

unsigned long rthin_spin_lock_irqsave(spinlock_t *lock)
{
	unsigned long flags;

	spin_lock_irqsave(lock, flags);
	return flags;
}

void rthin_spin_unlock_irqrestore(spinlock_t *lock, unsigned long flags)
{
	spin_unlock_irqrestore(lock, flags);
}

void rthin_init_delayed_work(struct delayed_work *dwork, work_func_t func)
{
	INIT_DELAYED_WORK(dwork, func);
}

struct delayed_work *rthin_to_delayed_work(struct work_struct *work)
{
	return to_delayed_work(work);
}

unsigned long rthin_msecs_to_jiffies(unsigned int m)
{
	return msecs_to_jiffies(m);
}

unsigned int rthin_memalloc_noio_save(void)
{
	return memalloc_noio_save();
}

void rthin_memalloc_noio_restore(unsigned int flags)
{
	memalloc_noio_restore(flags);
}

/* Tells lockdep that what runs between these two may run in memory reclaim (no-ops without it). */
void rthin_fs_reclaim_acquire(void)
{
	fs_reclaim_acquire(GFP_KERNEL);
}

void rthin_fs_reclaim_release(void)
{
	fs_reclaim_release(GFP_KERNEL);
}

/*
 * How often an active pool commits its metadata, as dm-thin's COMMIT_PERIOD (1 s). Tests set
 * it to 0 (no periodic commits) to tell a commit a flush made from the periodic one.
 */
static unsigned int commit_period_ms = 1000;
module_param(commit_period_ms, uint, 0644);
MODULE_PARM_DESC(commit_period_ms, "Periodic metadata commit interval in ms (0: none; for tests)");

unsigned int rthin_commit_period_ms(void)
{
	return READ_ONCE(commit_period_ms);
}

/*
 * How long a pool out of data space holds the writes that need a new block before failing
 * them, in seconds: dm-thin's no_space_timeout (0: hold them until the pool grows).
 */
static unsigned int no_space_timeout = 60;
module_param(no_space_timeout, uint, 0644);
MODULE_PARM_DESC(no_space_timeout, "Out of data space queue IO timeout in seconds (0: forever)");

unsigned int rthin_no_space_timeout(void)
{
	return READ_ONCE(no_space_timeout);
}

/*
 * Register the thin targets under dm-thin's names, `thin-pool` and `thin`, instead of
 * `rthin-pool` and `rthin`, so that lvm2 and other dm-thin users drive rthin. Read once,
 * when the module registers its targets.
 */
static bool dm_thin_names;
module_param(dm_thin_names, bool, 0444);
MODULE_PARM_DESC(dm_thin_names, "Register the thin targets as thin-pool and thin (dm-thin's names; dm-thin must not be loaded)");

bool rthin_dm_thin_names(void)
{
	return READ_ONCE(dm_thin_names);
}

void rthin_msleep(unsigned int ms)
{
	msleep(ms);
}

dev_t rthin_target_md_devt(struct dm_target *ti)
{
	return disk_devt(dm_disk(dm_table_get_md(ti->table)));
}

/* Opens a block device for reading and writing, not exclusively; NULL and *err on failure. */
struct file *rthin_bdev_file_open(dev_t dev, int *err)
{
	struct file *f = bdev_file_open_by_dev(dev, BLK_OPEN_READ | BLK_OPEN_WRITE, NULL, NULL);

	if (IS_ERR(f)) {
		*err = PTR_ERR(f);
		return NULL;
	}
	*err = 0;
	return f;
}

/* The module's one global lock (see rust/locking.rs): a rw_semaphore, lookups take it shared. */
static DECLARE_RWSEM(rthin_global_sem);

void rthin_global_read_lock(void)
{
	down_read(&rthin_global_sem);
}

void rthin_global_read_unlock(void)
{
	up_read(&rthin_global_sem);
}

void rthin_global_write_lock(void)
{
	down_write(&rthin_global_sem);
}

void rthin_global_write_unlock(void)
{
	up_write(&rthin_global_sem);
}

u64 rthin_jiffies64(void)
{
	return get_jiffies_64();
}
