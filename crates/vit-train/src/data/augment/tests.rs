use rand::SeedableRng;

use super::*;

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

const G3: Geometry = Geometry { channels: 1, side: 3 };

#[test]
fn flip_and_padded_crop_move_pixels() {
    let mut r = rng(1);
    let mut scratch = Vec::new();
    let flip = Augment { hflip: true, ..Augment::NONE };
    let mut img: Vec<u8> = (0..9).collect(); // 1x3x3
    while img == (0..9).collect::<Vec<u8>>() {
        augment_image(&mut img, &mut scratch, G3, &flip, &mut r);
    }
    assert_eq!(img, vec![2, 1, 0, 5, 4, 3, 8, 7, 6]);
    // A padded crop only keeps original pixels or brings in zeros.
    let crop = Augment { crop_padding: 1, ..Augment::NONE };
    for _ in 0..20 {
        let mut copy: Vec<u8> = (1..10).collect();
        augment_image(&mut copy, &mut scratch, G3, &crop, &mut r);
        assert!(copy.iter().all(|v| *v == 0 || (1..10).contains(v)), "{copy:?}");
    }
}

#[test]
fn resized_crop_of_a_constant_image_is_constant_and_full_scale_is_identity() {
    let g = Geometry { channels: 3, side: 16 };
    let mut scratch = Vec::new();
    let mut r = rng(2);
    let mut flat = vec![77u8; 3 * 16 * 16];
    random_resized_crop(&mut flat, &mut scratch, g, (0.2, 0.5), &mut r);
    assert!(flat.iter().all(|&v| v == 77));
    // Scale (1, 1) with a square box must return the image unchanged; draw until square.
    let img: Vec<u8> = (0..3 * 16 * 16).map(|i| (i * 7 % 251) as u8).collect();
    let (mut same, mut tries) = (false, 0);
    while !same && tries < 200 {
        let mut copy = img.clone();
        random_resized_crop(&mut copy, &mut scratch, g, (1.0, 1.0), &mut r);
        same = copy == img;
        tries += 1;
    }
    assert!(same, "a full-size square crop must be the identity");
}

#[test]
fn resized_crop_zooms_into_a_gradient() {
    // Horizontal ramp 0..=240: a crop of a smaller box spans a narrower value range.
    let g = Geometry { channels: 1, side: 16 };
    let img: Vec<u8> = (0..256).map(|i| ((i % 16) * 16) as u8).collect();
    let mut scratch = Vec::new();
    let mut r = rng(3);
    for _ in 0..20 {
        let mut copy = img.clone();
        random_resized_crop(&mut copy, &mut scratch, g, (0.25, 0.3), &mut r);
        let (lo, hi) = (copy.iter().min().copied().unwrap_or(0), copy.iter().max().copied().unwrap_or(0));
        assert!(hi - lo < 240, "crop of <= 30% area must not span the whole ramp ({lo}..{hi})");
        // Each row is still non-decreasing (bilinear keeps monotonicity).
        for row in copy.chunks(16) {
            assert!(row.windows(2).all(|w| w[0] <= w[1]), "{row:?}");
        }
    }
}

#[test]
fn color_jitter_keeps_gray_gray_and_changes_colour() {
    let g = Geometry { channels: 3, side: 4 };
    let mut r = rng(4);
    let mut gray = vec![100u8; 48];
    color_jitter(&mut gray, g, 0.4, &mut r);
    let (a, b, c) = (&gray[0..16], &gray[16..32], &gray[32..48]);
    assert!(a == b && b == c, "gray input must stay gray: {gray:?}");
    let img: Vec<u8> = (0..48).map(|i| (i * 5) as u8).collect();
    let changed = (0..10).any(|_| {
        let mut copy = img.clone();
        color_jitter(&mut copy, g, 0.4, &mut r);
        copy != img
    });
    assert!(changed);
}

#[test]
fn random_erase_touches_one_box_only() {
    let g = Geometry { channels: 1, side: 32 };
    let mut r = rng(5);
    let mut img = vec![0u8; 32 * 32];
    random_erase(&mut img, g, &mut r);
    let changed: Vec<(usize, usize)> = (0..32 * 32).filter(|&i| img[i] != 0).map(|i| (i / 32, i % 32)).collect();
    assert!(!changed.is_empty());
    let area = changed.len() as f64 / 1024.0;
    assert!(area <= 0.34, "erased {area} of the image");
    let (y0, y1) = (changed.iter().map(|p| p.0).min().unwrap_or(0), changed.iter().map(|p| p.0).max().unwrap_or(0));
    let (x0, x1) = (changed.iter().map(|p| p.1).min().unwrap_or(0), changed.iter().map(|p| p.1).max().unwrap_or(0));
    assert!(((y1 - y0 + 1) * (x1 - x0 + 1)) as f64 / 1024.0 <= 0.34, "changes must lie in one box");
}

#[test]
fn cutmix_lam_is_the_kept_area_and_pixels_come_from_the_partner() {
    let g = Geometry { channels: 1, side: 10 };
    let mut r = rng(6);
    for _ in 0..20 {
        // Three images filled with 1, 2, 3: image 0 pairs with image 2.
        let mut px: Vec<u8> = [1u8, 2, 3].iter().flat_map(|&v| vec![v; 100]).collect();
        let lam = cutmix(&mut px, g, 0.6, &mut r);
        let own = px[..100].iter().filter(|&&v| v == 1).count() as f32 / 100.0;
        assert!((own - lam).abs() < 1e-6, "lam {lam} vs kept fraction {own}");
        assert!(px[..100].iter().all(|&v| v == 1 || v == 3));
        assert!(px[100..200].iter().all(|&v| v == 2), "the middle image pairs with itself");
    }
}

#[test]
fn mixup_blends_with_the_reversed_batch() {
    let mut px = vec![0.0f32, 0.0, 1.0, 1.0, 4.0, 4.0]; // 3 images of 2 values
    mixup(&mut px, 2, 0.75);
    assert_eq!(px, vec![1.0, 1.0, 1.0, 1.0, 3.0, 3.0]);
}

#[test]
fn draw_mix_follows_the_alphas() {
    let mut r = rng(7);
    assert_eq!(draw_mix(&Augment::NONE, &mut r), None);
    let only_cut = Augment { cutmix_alpha: 1.0, ..Augment::NONE };
    let both = Augment { mixup_alpha: 0.8, cutmix_alpha: 1.0, ..Augment::NONE };
    let mut kinds = (0, 0);
    for _ in 0..200 {
        assert!(matches!(draw_mix(&only_cut, &mut r), Some(MixKind::Cutmix(l)) if (0.0..=1.0).contains(&l)));
        match draw_mix(&both, &mut r) {
            Some(MixKind::Mixup(_)) => kinds.0 += 1,
            Some(MixKind::Cutmix(_)) => kinds.1 += 1,
            None => panic!("both alphas set must always mix"),
        }
    }
    assert!(kinds.0 > 60 && kinds.1 > 60, "{kinds:?}");
}
