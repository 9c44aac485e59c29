/* SPDX-License-Identifier: GPL-2.0 */
/*
 * C helpers: static inline functions and macros of the kernel that Rust cannot
 * call directly, each wrapped in a plain function. Only the abstraction layer
 * (rust/dm) calls them.
 */
#ifndef RTHIN_DM_HELPERS_H
#define RTHIN_DM_HELPERS_H

#include <linux/bio.h>
#include <linux/blkdev.h>
#include <linux/completion.h>
#include <linux/device-mapper.h>
#include <linux/spinlock.h>
#include <linux/sched/mm.h>
#include <linux/workqueue.h>

void rthin_bio_set_dev(struct bio *bio, struct block_device *bdev);
sector_t rthin_bdev_nr_sectors(struct block_device *bdev);
unsigned int rthin_bdev_max_discard_sectors(struct block_device *bdev);
void rthin_discard_range(struct block_device *bdev, sector_t sector, sector_t nr_sects,
			 struct bio **chain);
struct bio *rthin_bio_alloc_noio(void);

void rthin_init_completion(struct completion *x);
void rthin_might_sleep(void);

unsigned long rthin_spin_lock_irqsave(spinlock_t *lock);
void rthin_spin_unlock_irqrestore(spinlock_t *lock, unsigned long flags);

void rthin_init_delayed_work(struct delayed_work *dwork, work_func_t func);
struct delayed_work *rthin_to_delayed_work(struct work_struct *work);
unsigned long rthin_msecs_to_jiffies(unsigned int m);

unsigned int rthin_memalloc_noio_save(void);
void rthin_fs_reclaim_acquire(void);
void rthin_fs_reclaim_release(void);
unsigned int rthin_commit_period_ms(void);
unsigned int rthin_no_space_timeout(void);
bool rthin_dm_thin_names(void);
void rthin_msleep(unsigned int ms);
void rthin_memalloc_noio_restore(unsigned int flags);

dev_t rthin_target_md_devt(struct dm_target *ti);
struct file *rthin_bdev_file_open(dev_t dev, int *err);

u64 rthin_jiffies64(void);

void rthin_global_read_lock(void);
void rthin_global_read_unlock(void);
void rthin_global_write_lock(void);
void rthin_global_write_unlock(void);

#endif
