"""CelebA's attribute vocabulary, shared by the readers and the SynthFaces generator."""

CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald",
    "Bangs", "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair",
    "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair",
    "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache",
    "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose",
    "Receding_Hairline", "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair",
    "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick",
    "Wearing_Necklace", "Wearing_Necktie", "Young",
)

# The identity categories the paper audits bias against (Section 2.1).
DEFAULT_IDENTITIES = ("Male", "Young", "Chubby", "Pale_Skin")

# The seven attributes the paper also trains one at a time (Section 3.3).
SINGLE_ATTRIBUTE_SET = (
    "Blond_Hair", "Smiling", "Oval_Face", "Big_Nose", "Mustache",
    "Receding_Hairline", "Bags_Under_Eyes",
)
