/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What bindgen reads to generate rthin's device-mapper bindings: the headers that
 * kernel::bindings does not cover, the prototypes of rthin's C helpers, and
 * constants that bindgen cannot evaluate from their macros.
 */
#include <linux/bio.h>
#include <linux/blk_types.h>
#include <linux/device-mapper.h>
#include <linux/dm-bufio.h>
#include <linux/dm-io.h>
#include <linux/dm-kcopyd.h>
#include <linux/workqueue.h>
#include "helpers.h"

const blk_opf_t RTHIN_REQ_OP_MASK = REQ_OP_MASK;
const blk_opf_t RTHIN_REQ_PREFLUSH = REQ_PREFLUSH;
const blk_opf_t RTHIN_REQ_FUA = REQ_FUA;
const blk_opf_t RTHIN_REQ_SYNC = REQ_SYNC;
const blk_status_t RTHIN_BLK_STS_OK = BLK_STS_OK;
const blk_status_t RTHIN_BLK_STS_IOERR = BLK_STS_IOERR;
const blk_status_t RTHIN_BLK_STS_NOSPC = BLK_STS_NOSPC;
const blk_status_t RTHIN_BLK_STS_NOTSUPP = BLK_STS_NOTSUPP;
const blk_status_t RTHIN_BLK_STS_AGAIN = BLK_STS_AGAIN;
const blk_status_t RTHIN_BLK_STS_DM_REQUEUE = BLK_STS_DM_REQUEUE;
const unsigned int RTHIN_WQ_MEM_RECLAIM = WQ_MEM_RECLAIM;
const blk_mode_t RTHIN_BLK_OPEN_READ = BLK_OPEN_READ;
const unsigned long RTHIN_DM_BUFIO_CLIENT_NO_SLEEP = DM_BUFIO_CLIENT_NO_SLEEP;
