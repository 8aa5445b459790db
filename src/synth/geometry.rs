//! Heart-vector geometry: the cardiac dipole in body coordinates, the lead field of each
//! electrode, and the derivation of the 12 standard leads from electrode potentials.
//!
//! Leads are derived from electrode potentials exactly as an electrocardiograph does
//! (I = LA - RA, aVR = RA - (LA + LL)/2, V1 = phi(V1) - Wilson's central terminal, ...), so
//! Einthoven's law (II = I + III) and aVR + aVL + aVF = 0 hold for the heart signal and for
//! every artefact added at the electrodes.

/// A vector in body coordinates: `x` to the patient's left, `y` towards the feet, `z`
/// anterior. Dipoles are in microvolts (the potential they produce on lead I's axis).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Vec3 {
    /// Leftward component.
    pub x: f32,
    /// Inferior (footward) component.
    pub y: f32,
    /// Anterior component.
    pub z: f32,
}

impl Vec3 {
    /// The zero vector.
    pub const ZERO: Vec3 = Vec3::new(0.0, 0.0, 0.0);

    /// A vector from its components.
    pub const fn new(x: f32, y: f32, z: f32) -> Self {
        Vec3 { x, y, z }
    }

    /// A unit-length vector from a frontal-plane angle (degrees, 0 = lead I, +90 = aVF) and an
    /// anterior component `z` (-1..1): the frontal part is scaled so the result has length 1.
    pub fn from_frontal(angle_deg: f32, z: f32) -> Self {
        let z = z.clamp(-1.0, 1.0);
        let r = (1.0 - z * z).sqrt();
        let a = angle_deg.to_radians();
        Vec3::new(r * a.cos(), r * a.sin(), z)
    }

    /// This vector multiplied by `k`.
    pub fn scale(self, k: f32) -> Self {
        Vec3::new(self.x * k, self.y * k, self.z * k)
    }

    /// Dot product.
    pub fn dot(self, o: Vec3) -> f32 {
        self.x * o.x + self.y * o.y + self.z * o.z
    }

    /// Euclidean length.
    pub fn norm(self) -> f32 {
        self.dot(self).sqrt()
    }

    /// This vector scaled to length 1 (the zero vector stays zero).
    pub fn unit(self) -> Self {
        let n = self.norm();
        if n > 0.0 { self.scale(1.0 / n) } else { self }
    }

    /// Angle of the frontal-plane projection in degrees (-180..180], 0 = lead I, +90 = aVF.
    pub fn frontal_deg(self) -> f32 {
        self.y.atan2(self.x).to_degrees()
    }

    /// This vector rotated in the frontal plane by `deg` degrees (about the antero-posterior axis).
    pub fn rotate_frontal(self, deg: f32) -> Self {
        let (s, c) = deg.to_radians().sin_cos();
        Vec3::new(c * self.x - s * self.y, s * self.x + c * self.y, self.z)
    }

    /// This vector rotated in the horizontal plane by `deg` degrees (about the vertical axis,
    /// positive from left towards anterior).
    pub fn rotate_horizontal(self, deg: f32) -> Self {
        let (s, c) = deg.to_radians().sin_cos();
        Vec3::new(c * self.x - s * self.z, self.y, s * self.x + c * self.z)
    }
}

impl std::ops::Add for Vec3 {
    type Output = Vec3;
    fn add(self, o: Vec3) -> Vec3 {
        Vec3::new(self.x + o.x, self.y + o.y, self.z + o.z)
    }
}

/// Number of electrodes modelled: RA, LA, LL and V1..V6 (the right-leg drive is the reference).
pub const ELECTRODES: usize = 9;

/// Number of standard leads derived from the electrodes.
pub const LEADS: usize = 12;

/// Lead field of a precordial electrode: horizontal angle from lead I towards anterior,
/// an inferior tilt and a proximity gain (V2-V4 sit closest to the heart).
const fn precordial(angle_deg: f32, tilt: f32, gain: f32) -> (f32, f32, f32) {
    (angle_deg, tilt, gain)
}

/// Precordial electrode placement (V1..V6).
const PRECORDIAL: [(f32, f32, f32); 6] = [
    precordial(120.0, -0.05, 1.0),
    precordial(95.0, 0.0, 1.5),
    precordial(72.0, 0.05, 1.6),
    precordial(52.0, 0.1, 1.5),
    precordial(28.0, 0.12, 1.25),
    precordial(5.0, 0.12, 1.0),
];

/// The lead field of every electrode: the potential at electrode `e` is `dipole . field[e]`.
///
/// The limb electrodes form Einthoven's equilateral triangle with its centre (Wilson's central
/// terminal) at zero, so lead I points along +x and lead II at +60 degrees.
pub fn electrode_fields() -> [Vec3; ELECTRODES] {
    let s3 = 3f32.sqrt();
    let mut f = [Vec3::ZERO; ELECTRODES];
    f[0] = Vec3::new(-0.5, -0.5 / s3, 0.0); // RA
    f[1] = Vec3::new(0.5, -0.5 / s3, 0.0); // LA
    f[2] = Vec3::new(0.0, 1.0 / s3, 0.0); // LL
    for (i, &(angle, tilt, gain)) in PRECORDIAL.iter().enumerate() {
        let a = angle.to_radians();
        f[3 + i] = Vec3::new(a.cos(), tilt, a.sin()).scale(gain);
    }
    f
}

/// Derives the 12 standard leads (I, II, III, aVR, aVL, aVF, V1..V6) from electrode potentials
/// (RA, LA, LL, V1..V6), in microvolts.
#[inline]
pub fn leads_from_electrodes(e: &[f32; ELECTRODES]) -> [f32; LEADS] {
    let (ra, la, ll) = (e[0], e[1], e[2]);
    let wct = (ra + la + ll) / 3.0;
    [
        la - ra,
        ll - ra,
        ll - la,
        ra - 0.5 * (la + ll),
        la - 0.5 * (ra + ll),
        ll - 0.5 * (ra + la),
        e[3] - wct,
        e[4] - wct,
        e[5] - wct,
        e[6] - wct,
        e[7] - wct,
        e[8] - wct,
    ]
}

/// The 12 leads produced by a heart dipole alone (no electrode artefacts).
#[inline]
pub fn project_dipole(fields: &[Vec3; ELECTRODES], d: Vec3) -> [f32; LEADS] {
    let mut e = [0.0f32; ELECTRODES];
    for (p, f) in e.iter_mut().zip(fields) {
        *p = d.dot(*f);
    }
    leads_from_electrodes(&e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lead_i_points_left_and_avf_points_down() {
        let f = electrode_fields();
        let left = project_dipole(&f, Vec3::new(1000.0, 0.0, 0.0));
        assert!(
            (left[0] - 1000.0).abs() < 1e-3,
            "lead I sees the full x dipole"
        );
        assert!(left[5].abs() < 1e-3, "aVF is perpendicular to x");
        let down = project_dipole(&f, Vec3::new(0.0, 1000.0, 0.0));
        assert!(down[0].abs() < 1e-3);
        assert!(down[5] > 800.0, "aVF sees an inferior dipole");
    }

    #[test]
    fn einthoven_identities_hold_for_arbitrary_electrode_potentials() {
        let e = [13.5, -250.25, 777.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let l = leads_from_electrodes(&e);
        assert!((l[1] - (l[0] + l[2])).abs() < 1e-3);
        assert!((l[3] + l[4] + l[5]).abs() < 1e-3);
    }

    #[test]
    fn frontal_rotation_moves_the_axis_by_the_angle() {
        let v = Vec3::from_frontal(30.0, 0.2).rotate_frontal(45.0);
        assert!((v.frontal_deg() - 75.0).abs() < 1e-3);
        assert!((v.z - 0.2).abs() < 1e-6);
    }
}
