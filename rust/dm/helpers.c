// SPDX-License-Identifier: GPL-2.0
/* See helpers.h. Each function wraps one inline function or macro, nothing more. */
#include "helpers.h"

void rthin_bio_set_dev(struct bio *bio, struct block_device *bdev)
{
	bio_set_dev(bio, bdev);
}

sector_t rthin_bdev_nr_sectors(struct block_device *bdev)
{
	return bdev_nr_sectors(bdev);
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
